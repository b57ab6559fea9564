//! One client for OAuth token endpoints, shared by the provider client (`Upstream`) and OIDC
//! sign-in: a form POST with the client's credentials as HTTP Basic (RFC 6749 §2.3.1, the
//! values form-encoded first) or as request parameters, switching once from the first to the
//! second when the server says the client is not authenticated.

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use url::Url;

/// How the client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Basic`.
    Header,
    /// `client_id` and `client_secret` in the form.
    Params,
}

/// The client's credentials.
pub struct Client<'a> {
    /// `client_id`.
    pub id: &'a str,
    /// `client_secret`, if it has one.
    pub secret: Option<&'a str>,
}

/// A token endpoint's answer.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers (rate limits).
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Vec<u8>,
    /// The style that was used last.
    pub style: AuthStyle,
    /// Whether the server refused the client's authentication.
    pub client_rejected: bool,
}

/// RFC 6749 §2.3.1: Basic credentials are form-encoded before base64.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn has_error(body: &[u8], code: &str) -> bool {
    let text = String::from_utf8_lossy(body);
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
        .ok()
        .and_then(|m| {
            m.get("error")
                .and_then(serde_json::Value::as_str)
                .map(|e| e == code)
        })
        .or_else(|| {
            url::form_urlencoded::parse(text.as_bytes())
                .find(|(k, _)| k == "error")
                .map(|(_, v)| v == code)
        })
        .unwrap_or(false)
}

/// POSTs `form` to `url` as `client` (`first` style; with `may_switch`, once more with
/// parameters if the server refuses Basic). `bearer` adds an `Authorization: Bearer` header
/// (then the credentials go in the form). `seen` is told of each answer, or of a failure to get
/// one (`None`), for metrics.
#[allow(clippy::too_many_arguments)]
pub async fn post(
    http: &reqwest::Client,
    url: &Url,
    client: &Client<'_>,
    form: &[(&'static str, String)],
    authenticate: bool,
    first: AuthStyle,
    may_switch: bool,
    bearer: Option<&str>,
    mut seen: impl FnMut(Option<(u16, &HeaderMap)>),
) -> Result<Answer, reqwest::Error> {
    let mut style = first;
    loop {
        let mut fields = form.to_vec();
        let mut request = http.post(url.clone()).header(ACCEPT, "application/json");
        if authenticate {
            match (style, client.secret) {
                (AuthStyle::Header, Some(secret)) => {
                    request = request.basic_auth(form_encode(client.id), Some(form_encode(secret)));
                }
                (_, secret) => {
                    fields.push(("client_id", client.id.to_owned()));
                    if let Some(secret) = secret {
                        fields.push(("client_secret", secret.to_owned()));
                    }
                }
            }
        }
        if let Some(bearer) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {bearer}"));
        }
        let response = match request.form(&fields).send().await {
            Ok(response) => response,
            Err(e) => {
                seen(None);
                return Err(e);
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        seen(Some((status, &headers)));
        let body = response.bytes().await?.to_vec();
        let client_rejected = status == 401
            || (status == 400 && has_error(&body, "invalid_client"))
            || (status == 200 && has_error(&body, "incorrect_client_credentials"));
        if client_rejected && authenticate && may_switch && style == AuthStyle::Header {
            style = AuthStyle::Params;
            continue;
        }
        return Ok(Answer {
            status,
            headers,
            body,
            style,
            client_rejected,
        });
    }
}
