//! extauth in front of an MCP server, with the official MCP TypeScript SDK as the client
//! (`tests/idp/mcp.mjs`): from a bare 401 to a tool call through resource metadata, authorization
//! server discovery, a client ID metadata document or dynamic registration, PKCE with
//! `resource`, and a refresh of its own once the access token expired.

use std::process::Command;

use extauth_tests::{Broker, answer, free_port, private_ca};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Runs the SDK's client against a broker started with `env`; its results.
async fn sdk_client(mode: &str, env: &[(&str, &str)]) -> (Value, String) {
    let certs = tempfile::tempdir().unwrap();
    private_ca(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let mut settings: Vec<(String, String)> = vec![
        ("EXTAUTH_UPSTREAM_CA_FILE".into(), file("ca.pem")),
        // The document lives on https://127.0.0.1 in this test: an admin allows that.
        (
            "EXTAUTH_OAUTH2_CLIENT_METADATA_ALLOW_PRIVATE".into(),
            "true".into(),
        ),
        ("EXTAUTH_OAUTH2_ACCESS_TOKEN_LIFETIME".into(), "2s".into()),
    ];
    settings.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(free_port(), data.path(), &settings);
    let session = broker.session_cookie().await;
    let (admin, csrf) = broker.admin().await;
    let mcp_port = free_port();
    let resource = format!("http://127.0.0.1:{mcp_port}/mcp");
    let registered = answer(
        admin
            .post(format!("{}/api/v2/oauth2-provider/resources", broker.url))
            .header("X-CSRF-Token", &csrf)
            .json(&json!({"name": "Test MCP server", "url": resource, "scopes": ["mcp:tools"]})),
    )
    .await;
    assert_eq!(
        registered["metadata_url"],
        format!("{}/.well-known/oauth-protected-resource/mcp", broker.url)
    );
    let me = answer(admin.get(format!("{}/api/v2/users/me", broker.url))).await;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("idp");
    let vars = [
        ("BROKER", broker.url.clone()),
        ("SESSION", session),
        ("MODE", mode.to_owned()),
        ("MCP_PORT", mcp_port.to_string()),
        ("DOC_PORT", free_port().to_string()),
        ("TLS_CERT", file("server.pem")),
        ("TLS_KEY", file("server.key")),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("mcp.mjs"))
            .current_dir(&dir)
            .envs(vars)
            .output()
            .expect("node runs the MCP SDK client (tests/run installs its packages)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(results.get("error").is_none(), "{results}");
    assert_eq!(
        results["first_call"], me["id"],
        "the tool saw the signed-in user: {results}"
    );
    assert_eq!(results["second_call"], me["id"], "{results}");
    assert_eq!(results["had_refresh_token"], true, "{results}");
    assert_eq!(
        results["refreshed"], true,
        "the SDK refreshed by itself: {results}"
    );
    assert_eq!(
        results["authorizations"], 1,
        "no second authorization: {results}"
    );
    let authorize = url::Url::parse(results["authorize_url"].as_str().unwrap()).unwrap();
    let query: std::collections::BTreeMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    assert_eq!(query["resource"], resource, "{query:?}");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["scope"], "mcp:tools");
    assert!(
        results["scope"].as_str().unwrap().contains("mcp:tools"),
        "{results}"
    );
    // The server answered 401 before the authorization and after the token expired.
    assert!(results["unauthorized"].as_u64().unwrap() >= 2, "{results}");

    // What the admin sees: the client, by its origin.
    let apps = answer(admin.get(format!("{}/api/v2/oauth2-provider/apps", broker.url))).await;
    let client_id = results["client_id"].as_str().unwrap().to_owned();
    let app = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == client_id.as_str())
        .cloned()
        .unwrap_or_default();
    let origin = app["origin"].as_str().unwrap_or_default().to_owned();
    // A token for the MCP server is not one for extauth's own API.
    let response = reqwest::Client::new()
        .get(format!("{}/api/v2/users/me", broker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(broker.stop());
    (results, origin)
}

#[tokio::test]
async fn the_mcp_sdk_signs_in_with_a_client_id_metadata_document() {
    let (results, origin) = sdk_client("document", &[]).await;
    assert!(
        results["client_id"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/client.json"),
        "{results}"
    );
    assert_eq!(origin, "metadata_document");
}

#[tokio::test]
async fn the_mcp_sdk_registers_itself_when_registration_is_open() {
    let (results, origin) = sdk_client("registration", &[("EXTAUTH_OAUTH2_DCR", "true")]).await;
    assert!(
        results["client_id"].as_str().unwrap().starts_with("dyn_"),
        "{results}"
    );
    assert_eq!(origin, "registered");
}
