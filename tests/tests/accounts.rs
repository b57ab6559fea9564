//! Several accounts of one provider (work and personal GitHub; cli/cli#3278): two IdP users
//! linked to one extauth user. The default answers unless the remote URL's user, a routed
//! repository owner or `--account` chooses the other; each account refreshes, is unlinked and
//! made default on its own.

use std::io::Write;
use std::process::{Command, Stdio};

use extauth_tests::{Broker, Idp, binary, client, free_port, provider_env};
use serde_json::{Value, json};

struct World {
    idp: Idp,
    broker: Broker,
    admin: reqwest::Client,
    csrf: String,
    token: String,
    _data: tempfile::TempDir,
}

async fn world() -> World {
    let port = free_port();
    let idp = Idp::start(json!({
        "clients": [client(
            "app",
            "app-secret",
            &[format!("http://127.0.0.1:{port}/external-auth/forge/callback")],
            false,
        )],
    }));
    let env = provider_env(
        0,
        "forge",
        &idp.issuer,
        "app",
        "app-secret",
        "git.forge.test",
    );
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, data.path(), &env);
    let (admin, csrf) = broker.admin().await;
    let token = broker
        .workspace_token(&admin, &csrf, "me", json!({"name": "ws"}))
        .await;
    World {
        idp,
        broker,
        admin,
        csrf,
        token,
        _data: data,
    }
}

impl World {
    /// Whose token the lookup with `query` hands out (the IdP's introspection says).
    async fn owner_of_lookup(&self, query: &str) -> String {
        let (status, answer) = self.broker.lookup(&self.token, query).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
        let token = answer["access_token"].as_str().unwrap();
        let seen = self.idp.introspect("app", "app-secret", token).await;
        assert_eq!(seen["active"], true);
        let sub = seen["sub"].as_str().unwrap().to_owned();
        assert_eq!(
            answer["account"],
            sub.as_str(),
            "the answer names the account"
        );
        sub
    }

    async fn accounts(&self) -> Vec<Value> {
        let page: Value = self
            .admin
            .get(format!("{}/api/v2/external-auth/forge", self.broker.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["accounts"].as_array().unwrap().clone()
    }

    async fn change(&self, account: &str, body: Value) -> reqwest::StatusCode {
        self.admin
            .put(format!(
                "{}/api/v2/external-auth/forge/accounts/{account}",
                self.broker.url
            ))
            .header("X-CSRF-Token", &self.csrf)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_accounts_of_one_provider_are_chosen_by_url_user_owner_and_name() {
    let w = world().await;
    // alice first (the default), then bob with "Add another account".
    w.broker.link(&w.admin, "forge").await;
    w.idp.set_account("bob").await;
    // A browser not signed in at the IdP (as one switching accounts would be).
    let (other_browser, _) = w.broker.admin().await;
    let added = other_browser
        .get(format!(
            "{}/external-auth/forge/callback?add_account=1",
            w.broker.url
        ))
        .send()
        .await
        .unwrap();
    let page = added.text().await.unwrap();
    assert!(page.contains("Connected."), "{page}");
    assert!(page.contains("Add another") && page.contains("alice") && page.contains("bob"));

    let accounts = w.accounts().await;
    let names: Vec<(&str, bool)> = accounts
        .iter()
        .map(|a| (a["account"].as_str().unwrap(), a["default"] == true))
        .collect();
    assert_eq!(names, [("alice", true), ("bob", false)]);

    // Nothing chooses: the default. The remote URL's user, or the name, chooses bob.
    assert_eq!(w.owner_of_lookup("id=forge").await, "alice");
    assert_eq!(w.owner_of_lookup("id=forge&account=bob").await, "bob");
    // An account not linked is only a preference: the default answers.
    assert_eq!(w.owner_of_lookup("id=forge&account=carol").await, "alice");

    // Repositories of acme (and acme-*) go to bob.
    assert_eq!(
        w.change("bob", json!({"owners": ["acme", "acme-*"]})).await,
        204
    );
    let url = |owner: &str| format!("match=https://git.forge.test/{owner}/app.git");
    assert_eq!(w.owner_of_lookup(&url("acme")).await, "bob");
    assert_eq!(w.owner_of_lookup(&url("acme-labs")).await, "bob");
    assert_eq!(w.owner_of_lookup(&url("globex")).await, "alice");
    assert_eq!(w.change("bob", json!({"owners": ["a/b"]})).await, 400);
    assert_eq!(w.change("carol", json!({"default": true})).await, 404);

    // git's helper: `https://bob@git.forge.test/globex/app.git` names bob.
    let (_, bobs) = w.broker.lookup(&w.token, "id=forge&account=bob").await;
    let bobs = bobs["access_token"].as_str().unwrap().to_owned();
    let mut helper = Command::new(binary("git-credential-extauth"))
        .arg("get")
        .env_clear()
        .env("EXTAUTH_URL", &w.broker.url)
        .env("EXTAUTH_TOKEN", &w.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    helper
        .stdin
        .take()
        .unwrap()
        .write_all(b"protocol=https\nhost=git.forge.test\npath=globex/app.git\nusername=bob\n\n")
        .unwrap();
    let answer = String::from_utf8(helper.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        answer
            .lines()
            .any(|l| l == format!("password={bobs}") || l == format!("username={bobs}")),
        "the helper answered with bob's token"
    );

    // The CLI: --account picks, and an account not linked is an error, not the default.
    let cli = |args: &[&str]| {
        Command::new(binary("extauth"))
            .env_clear()
            .env("EXTAUTH_URL", &w.broker.url)
            .env("EXTAUTH_TOKEN", &w.token)
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["access-token", "forge", "--account", "bob"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), bobs);
    let out = cli(&["access-token", "forge", "--account", "carol"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no forge account \"carol\""));

    // bob becomes the default; unlinking him leaves alice, the default again.
    assert_eq!(w.change("bob", json!({"default": true})).await, 204);
    assert_eq!(w.owner_of_lookup("id=forge").await, "bob");
    let unlinked = w
        .admin
        .delete(format!(
            "{}/api/v2/external-auth/forge/accounts/bob",
            w.broker.url
        ))
        .header("X-CSRF-Token", &w.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(unlinked.status(), reqwest::StatusCode::OK);
    assert_eq!(w.owner_of_lookup("id=forge").await, "alice");
    let accounts = w.accounts().await;
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["default"], true);
    // bob's token was revoked at the provider.
    assert_eq!(
        w.idp.introspect("app", "app-secret", &bobs).await["active"],
        false
    );
}

/// Connecting again (not "Add another account") replaces the account rather than piling up
/// accounts: the same login, or the one account there is.
#[tokio::test(flavor = "multi_thread")]
async fn connecting_again_replaces_the_account() {
    let w = world().await;
    w.broker.link(&w.admin, "forge").await;
    let relinked = w
        .admin
        .get(format!("{}/external-auth/forge/callback", w.broker.url))
        .send()
        .await
        .unwrap();
    assert!(relinked.text().await.unwrap().contains("Connected."));
    assert_eq!(w.accounts().await.len(), 1);
    // Signed in as someone else at the provider, a plain Connect swaps the one account.
    w.idp.set_account("bob").await;
    let (other_browser, _) = w.broker.admin().await;
    let _ = other_browser
        .get(format!("{}/external-auth/forge/callback", w.broker.url))
        .send()
        .await
        .unwrap();
    let accounts = w.accounts().await;
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0]["account"], "bob");
    assert_eq!(accounts[0]["default"], true);
}
