//! The workspace's view of the broker: where it is, the token to present, and a small blocking
//! client of its workspace API (also used by the `extauth` CLI).

use std::sync::Arc;
use std::time::Duration;

use extauth_providers::wire::{ErrorBody, ExternalAuthResponse};

/// Where the broker is and how to authenticate to it.
#[derive(Clone)]
pub struct Settings {
    /// Broker base URL, without trailing slash.
    pub url: String,
    /// Workspace (or API) token; empty with a workload identity.
    token: String,
    /// The workload identity token file (`EXTAUTH_IDENTITY_TOKEN_FILE`), exchanged for the
    /// token to present.
    identity: Option<Arc<crate::identity::IdentityToken>>,
    /// Which variable the URL came from, for messages.
    pub url_variable: &'static str,
    /// How long to wait for the user to link a provider.
    pub login_timeout: Duration,
    /// Trust only these roots for an https broker (`EXTAUTH_CA_FILE`, else `SSL_CERT_FILE`);
    /// none: the Mozilla roots built in.
    roots: Option<Vec<ureq::tls::Certificate<'static>>>,
    /// The file the roots came from, for the connection agent.
    ca_file: Option<String>,
    /// Where the connection agent for this broker listens (`None`: off, or no place for it).
    agent: Option<crate::relay::Place>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// A missing or wrong workspace setting. Each message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Neither EXTAUTH_URL nor CODER_AGENT_URL.
    #[error(
        "EXTAUTH_URL is not set: set EXTAUTH_URL and EXTAUTH_TOKEN to the two lines shown on the broker's Workspace tokens page (in a Coder workspace, CODER_AGENT_URL and CODER_AGENT_TOKEN are used)"
    )]
    MissingUrl,
    /// The URL is not http(s).
    #[error(
        "{variable}: {value:?} is not an http:// or https:// URL; set it to the broker's address, e.g. https://extauth.example.com"
    )]
    BadUrl {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// No token.
    #[error(
        "{variable} is not set: set it to a workspace token (create one at {url}/workspace-tokens), or set EXTAUTH_IDENTITY_TOKEN_FILE to a workload identity token a trust policy of the broker accepts"
    )]
    MissingToken {
        /// The variable.
        variable: &'static str,
        /// The broker URL.
        url: String,
    },
    /// The token file cannot be read.
    #[error("{variable} {path}: {error}")]
    TokenFile {
        /// The variable.
        variable: &'static str,
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
    /// A bad duration.
    #[error("EXTAUTH_LOGIN_TIMEOUT: {0:?} is not a duration; write e.g. 30s, 5m or 1h")]
    BadTimeout(String),
    /// A connection agent setting that means nothing.
    #[error("{variable}: {value:?} is not {expected}")]
    BadAgent {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
    /// The CA file cannot be used.
    #[error(
        "{variable} {path}: {error}; give a PEM file of the CA certificates to trust for the broker"
    )]
    CaFile {
        /// The variable.
        variable: &'static str,
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
}

/// The roots to trust for an https broker: `EXTAUTH_CA_FILE`, else `SSL_CERT_FILE` (OpenSSL's
/// variable, which environments with a private CA often set already). Read only for https, so
/// a plain-http broker costs nothing.
fn roots_from(url: &str, get: impl Fn(&str) -> Option<String>) -> Result<Roots, ConfigError> {
    if !url.starts_with("https://") {
        return Ok((None, None));
    }
    let Some((variable, path)) = ["EXTAUTH_CA_FILE", "SSL_CERT_FILE"]
        .into_iter()
        .find_map(|v| get(v).filter(|p| !p.trim().is_empty()).map(|p| (v, p)))
    else {
        return Ok((None, None));
    };
    let failed = |error: String| ConfigError::CaFile {
        variable,
        path: path.clone(),
        error,
    };
    let pem = std::fs::read(&path).map_err(|e| failed(e.to_string()))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(failed("no certificate in it".to_owned()));
    }
    Ok((Some(certs), Some(path)))
}

/// Trusted roots and the file they came from.
type Roots = (Option<Vec<ureq::tls::Certificate<'static>>>, Option<String>);

/// `EXTAUTH_AGENT` and `EXTAUTH_AGENT_IDLE` checked where a mistake can be said: the agent
/// itself runs with no terminal.
fn check_agent_settings(get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    if let Some(value) = get("EXTAUTH_AGENT").filter(|v| crate::relay::switch(v).is_none()) {
        return Err(ConfigError::BadAgent {
            variable: "EXTAUTH_AGENT",
            value,
            expected: "on or off",
        });
    }
    if let Some(value) = get("EXTAUTH_AGENT_IDLE").filter(|v| parse_duration(v).is_none()) {
        return Err(ConfigError::BadAgent {
            variable: "EXTAUTH_AGENT_IDLE",
            value,
            expected: "a duration; write e.g. 90s, 10m or 1h",
        });
    }
    Ok(())
}

/// The connection agent's place for a broker and its roots.
fn agent_place(
    url: &str,
    roots: Option<&[ureq::tls::Certificate<'static>]>,
    get: impl Fn(&str) -> Option<String>,
) -> Option<crate::relay::Place> {
    crate::relay::Place::find(
        url,
        roots.unwrap_or_default().iter().map(|c| c.der()),
        crate::identity::cache_dir(&get),
        get,
    )
}

impl Settings {
    /// Reads `EXTAUTH_URL` + `EXTAUTH_TOKEN` (or `EXTAUTH_TOKEN_FILE`), falling back to Coder's
    /// `CODER_AGENT_URL` + `CODER_AGENT_TOKEN` (or `CODER_AGENT_TOKEN_FILE`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let (url_variable, token_variable, file_variable) = if get("EXTAUTH_URL").is_some() {
            ("EXTAUTH_URL", "EXTAUTH_TOKEN", "EXTAUTH_TOKEN_FILE")
        } else if get("CODER_AGENT_URL").is_some() {
            (
                "CODER_AGENT_URL",
                "CODER_AGENT_TOKEN",
                "CODER_AGENT_TOKEN_FILE",
            )
        } else {
            return Err(ConfigError::MissingUrl);
        };
        let value = get(url_variable).unwrap_or_default();
        if !(value.starts_with("http://") || value.starts_with("https://"))
            || url::Url::parse(&value).is_err()
        {
            return Err(ConfigError::BadUrl {
                variable: url_variable,
                value,
            });
        }
        let url = value.trim_end_matches('/').to_owned();
        let mut identity = None;
        let token = match (get(token_variable), get(file_variable)) {
            (Some(token), _) => token,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map(|t| t.trim().to_owned())
                .map_err(|e| ConfigError::TokenFile {
                    variable: file_variable,
                    path,
                    error: e.to_string(),
                })?,
            (None, None) if get("EXTAUTH_IDENTITY_TOKEN_FILE").is_some() => {
                let path = get("EXTAUTH_IDENTITY_TOKEN_FILE").unwrap_or_default();
                identity = Some(Arc::new(crate::identity::IdentityToken::new(
                    path.into(),
                    &url,
                    crate::identity::cache_dir(get),
                )));
                String::new()
            }
            (None, None) => {
                return Err(ConfigError::MissingToken {
                    variable: token_variable,
                    url,
                });
            }
        };
        let login_timeout = match get("EXTAUTH_LOGIN_TIMEOUT") {
            None => Duration::from_secs(300),
            Some(text) => parse_duration(&text).ok_or(ConfigError::BadTimeout(text))?,
        };
        let (roots, ca_file) = roots_from(&url, get)?;
        check_agent_settings(get)?;
        let agent = agent_place(&url, roots.as_deref(), get);
        Ok(Self {
            url,
            token,
            identity,
            url_variable,
            login_timeout,
            roots,
            ca_file,
            agent,
        })
    }

    /// Settings for an explicit broker URL and token (the CLI's login), trusting the roots the
    /// process environment names (see [`Settings::from_env`]).
    pub fn new(url: &str, token: &str) -> Result<Self, ConfigError> {
        let url = url.trim_end_matches('/').to_owned();
        let (roots, ca_file) = roots_from(&url, |name| std::env::var(name).ok())?;
        Ok(Self {
            url,
            token: token.to_owned(),
            identity: None,
            url_variable: "EXTAUTH_URL",
            login_timeout: Duration::from_secs(300),
            roots,
            ca_file,
            agent: None,
        })
    }

    /// The connection agent's settings: the broker and the roots the helper that started it
    /// trusts (`ca_file`), no token of its own.
    pub fn for_agent(url: &str, ca_file: Option<String>) -> Result<Self, ConfigError> {
        let (roots, ca_file) = roots_from(url, |name| {
            (name == "EXTAUTH_CA_FILE")
                .then(|| ca_file.clone())
                .flatten()
        })?;
        Ok(Self {
            url: url.to_owned(),
            token: String::new(),
            identity: None,
            url_variable: "EXTAUTH_URL",
            login_timeout: Duration::from_secs(300),
            roots,
            ca_file,
            agent: None,
        })
    }
}

/// `250ms`, `30s`, `5m`, `1h` or plain seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

/// How to pick the provider.
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    /// A repository URL.
    Match(&'a str),
    /// A provider ID.
    Id(&'a str),
}

/// What a lookup would rather have, when there is a choice.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prefer<'a> {
    /// The account, when several of the provider are linked.
    pub account: Option<&'a str>,
    /// The HTTP schemes the git server offered (`basic,bearer`), to choose among providers of
    /// one URL.
    pub schemes: Option<&'a str>,
}

/// What the broker answered.
#[derive(Debug)]
pub enum Lookup {
    /// The token (boxed: the answer is large beside the other cases).
    Token(Box<ExternalAuthResponse>),
    /// Not linked: the page to open.
    NotLinked(String),
    /// No provider serves this URL (or no such ID).
    NoMatch {
        /// The broker's message.
        message: String,
        /// Its detail.
        detail: String,
    },
}

/// Talking to the broker failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No answer.
    #[error("cannot reach the broker at {url}: {error}")]
    Unreachable {
        /// Broker URL.
        url: String,
        /// Why.
        error: String,
    },
    /// The token was refused.
    #[error(
        "the broker refused the token ({message}); check EXTAUTH_TOKEN, or create a new workspace token"
    )]
    Unauthorized {
        /// The broker's message.
        message: String,
    },
    /// The workload identity token could not be read or exchanged.
    #[error("workload identity: {0}")]
    Identity(String),
    /// Any other error answer.
    #[error("the broker answered {status}: {message}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Api {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Detail.
        detail: String,
    },
}

/// The blocking broker client.
pub struct Client {
    settings: Settings,
    agent: ureq::Agent,
}

impl Client {
    /// A client; nothing is connected or set up before the first request.
    pub fn new(settings: Settings) -> Self {
        Self::with_pool(settings, None)
    }

    /// A client that keeps an idle connection open for `keep` (the connection agent's).
    pub fn kept_alive(settings: Settings, keep: Duration) -> Self {
        Self::with_pool(settings, Some(keep))
    }

    fn with_pool(settings: Settings, keep: Option<Duration>) -> Self {
        let mut config = ureq::Agent::config_builder();
        if let Some(keep) = keep {
            config = config.max_idle_age(keep);
        }
        if let Some(roots) = &settings.roots {
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(roots))
                    .build(),
            );
        }
        let agent: ureq::Agent = config
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .user_agent(concat!("extauth/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { settings, agent }
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}{path}", self.settings.url);
        if !query.is_empty() {
            url.push('?');
            url.push_str(
                &url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(query)
                    .finish(),
            );
        }
        url
    }

    /// Posts a form without the bearer token (the authorization server's endpoints, where the
    /// client proves itself in the form); the status and body.
    pub fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<(u16, String), ClientError> {
        let url = self.url(path, &[]);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .config()
            .http_status_as_error(false)
            .build()
            .send(body.as_bytes())
            .map_err(|e| ClientError::Unreachable {
                url: self.settings.url.clone(),
                error: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Unreachable {
                url: self.settings.url.clone(),
                error: e.to_string(),
            })?;
        Ok((status, text))
    }

    /// The token to present: the workspace token, or the workload's exchanged one (`refused`:
    /// the broker refused this one just now).
    pub fn bearer(&self, refused: Option<&str>) -> Result<std::borrow::Cow<'_, str>, ClientError> {
        let Some(identity) = &self.settings.identity else {
            // The common case, on every request: no copy.
            return Ok(std::borrow::Cow::Borrowed(&self.settings.token));
        };
        identity
            .bearer(refused, |workload| {
                self.exchange_identity(workload, &identity.path)
            })
            .map(std::borrow::Cow::Owned)
            .map_err(|e: IdentityFailure| e.0)
    }

    /// RFC 8693 at the broker's token endpoint: the workload's token for an extauth token.
    fn exchange_identity(
        &self,
        workload: &str,
        path: &std::path::Path,
    ) -> Result<crate::identity::Exchanged, IdentityFailure> {
        let (status, text, answer) =
            self.token_exchange(workload, "urn:ietf:params:oauth:token-type:jwt", None)?;
        match (status, answer.access_token) {
            (200, Some(token)) => Ok(crate::identity::Exchanged {
                access_token: token,
                expires_at: crate::identity::now().saturating_add(answer.expires_in.unwrap_or(300)),
            }),
            _ => Err(IdentityFailure(ClientError::Identity(format!(
                "the broker refused the token in {} ({}: {}); an admin sees why in the broker's log",
                path.display(),
                terminal_safe(answer.error.as_deref().unwrap_or("error")),
                terminal_safe(
                    &answer
                        .error_description
                        .unwrap_or_else(|| text.chars().take(200).collect())
                )
            )))),
        }
    }

    /// RFC 8693 token exchange at the broker's token endpoint (no client authentication: the
    /// subject token is the proof): the status, the body and its fields.
    fn token_exchange(
        &self,
        subject: &str,
        subject_type: &str,
        audience: Option<&str>,
    ) -> Result<(u16, String, ExchangeAnswer), ClientError> {
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            ("subject_token_type", subject_type),
        ];
        if let Some(audience) = audience {
            form.push(("audience", audience));
        }
        let (status, text) = self.post_form("/oauth2/tokens", &form)?;
        let answer = serde_json::from_str(&text).unwrap_or_default();
        Ok((status, text, answer))
    }

    /// A GitHub App installation token for `provider`, as the workload's trust policy grants
    /// it: the extauth token this client presents, exchanged again (RFC 8693, audience the
    /// provider).
    pub fn app_token(&self, provider: &str) -> Result<AppToken, ClientError> {
        let bearer = self.bearer(None)?;
        let (status, _, answer) = self.token_exchange(
            &bearer,
            "urn:ietf:params:oauth:token-type:access_token",
            Some(provider),
        )?;
        match (status, answer.access_token) {
            (200, Some(token)) => Ok(AppToken {
                provider: provider.to_owned(),
                token,
                revoke_url: answer.extauth_revoke_url,
            }),
            _ => Err(ClientError::Api {
                status,
                message: format!(
                    "no GitHub App token for {provider}: {}",
                    terminal_safe(answer.error.as_deref().unwrap_or("error"))
                ),
                detail: terminal_safe(&answer.error_description.unwrap_or_default()),
            }),
        }
    }

    /// Revokes an installation token at its forge (`DELETE /installation/token`, the token
    /// as its own credential).
    pub fn revoke_app_token(&self, app: &AppToken) -> Result<(), ClientError> {
        let Some(url) = &app.revoke_url else {
            return Ok(());
        };
        let response = self
            .agent
            .delete(url)
            .header("Authorization", &format!("Bearer {}", app.token))
            .header("Accept", "application/vnd.github+json")
            .call()
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                error: e.to_string(),
            })?;
        match response.status().as_u16() {
            200..=299 | 401 => Ok(()),
            status => Err(ClientError::Api {
                status,
                message: format!("revoking the {} installation token failed", app.provider),
                detail: String::new(),
            }),
        }
    }

    /// Sends a request and returns the status and body. A workload's exchanged token that is
    /// refused is exchanged again once (its policy may have changed).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, String), ClientError> {
        let bearer = self.bearer(None)?;
        match self.send_with(&bearer, method, path, query, body, timeout) {
            Err(ClientError::Unauthorized { .. }) if self.settings.identity.is_some() => {
                let again = self.bearer(Some(&bearer))?;
                self.send_with(&again, method, path, query, body, timeout)
            }
            other => other,
        }
    }

    fn send_with(
        &self,
        bearer: &str,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, String), ClientError> {
        let url = self.url(path, query);
        let (status, text) = match (&self.settings.agent, method, timeout) {
            // A plain lookup: through the connection agent when one runs.
            (Some(place), "GET", None) => {
                let path_and_query = url.get(self.settings.url.len()..).unwrap_or_default();
                match crate::relay::relay(place, bearer, path_and_query) {
                    Some(Ok(answer)) => answer,
                    Some(Err(error)) => {
                        return Err(ClientError::Unreachable {
                            url: self.settings.url.clone(),
                            error,
                        });
                    }
                    None => {
                        let answer = self.exchange(bearer, method, &url, body, timeout);
                        if crate::relay::wanted(place) {
                            crate::relay::start(
                                place,
                                &self.settings.url,
                                self.settings.ca_file.as_deref(),
                            );
                        }
                        answer?
                    }
                }
            }
            _ => self.exchange(bearer, method, &url, body, timeout)?,
        };
        if status == 401 {
            return Err(ClientError::Unauthorized {
                message: error_body(&text).message,
            });
        }
        Ok((status, text))
    }

    /// The connection agent's request: `GET path_and_query` with `bearer`, the status and body
    /// as the broker answered (or why it could not be reached). A kept-alive connection the
    /// broker closed meanwhile fails only the first try.
    pub fn get_raw(&self, bearer: &str, path_and_query: &str) -> Result<(u16, String), String> {
        let url = format!("{}{path_and_query}", self.settings.url);
        self.exchange(bearer, "GET", &url, None, None)
            .or_else(|_| self.exchange(bearer, "GET", &url, None, None))
            .map_err(|e| match e {
                ClientError::Unreachable { error, .. } => error,
                other => other.to_string(),
            })
    }

    /// One request to the broker, its status and body whatever they are.
    fn exchange(
        &self,
        bearer: &str,
        method: &str,
        url: &str,
        body: Option<&serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, String), ClientError> {
        let auth = format!("Bearer {bearer}");
        let unreachable = |e: ureq::Error| {
            let mut error = e.to_string();
            if error.contains("certificate") {
                // The usual cause: the broker's certificate comes from a private CA.
                error.push_str(if self.settings.roots.is_some() {
                    "; the CA file given (EXTAUTH_CA_FILE or SSL_CERT_FILE) does not vouch for it"
                } else {
                    "; if the broker's certificate comes from a private CA, set EXTAUTH_CA_FILE to that CA's PEM file"
                });
            }
            ClientError::Unreachable {
                url: self.settings.url.clone(),
                error,
            }
        };
        let response = match (method, body) {
            ("GET", _) => {
                let request = self.agent.get(url).header("Authorization", &auth);
                match timeout {
                    Some(t) => request.config().timeout_global(Some(t)).build().call(),
                    None => request.call(),
                }
            }
            ("DELETE", _) => self.agent.delete(url).header("Authorization", &auth).call(),
            (_, body) => self
                .agent
                .post(url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.map(ToString::to_string).unwrap_or_default().as_bytes()),
        };
        let mut response = response.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(unreachable)?;
        Ok((status, text))
    }

    /// `GET /api/v2/workspaceagents/me/external-auth`; with `listen`, the broker waits (up to
    /// its own limit, or `listen` here) for the provider to be linked.
    pub fn external_auth(
        &self,
        by: By<'_>,
        listen: Option<Duration>,
    ) -> Result<Lookup, ClientError> {
        self.external_auth_as(by, Prefer::default(), listen)
    }

    /// [`Client::external_auth`] preferring `account` when several accounts of the provider
    /// are linked (`access-token --account`, `user@` in the remote URL).
    pub fn external_auth_as(
        &self,
        by: By<'_>,
        prefer: Prefer<'_>,
        listen: Option<Duration>,
    ) -> Result<Lookup, ClientError> {
        let mut query = match by {
            By::Match(url) => vec![("match", url)],
            By::Id(id) => vec![("id", id)],
        };
        if let Some(account) = prefer.account.filter(|a| !a.is_empty()) {
            query.push(("account", account));
        }
        if let Some(schemes) = prefer.schemes.filter(|s| !s.is_empty()) {
            query.push(("schemes", schemes));
        }
        if listen.is_some() {
            query.push(("listen", "true"));
        }
        let timeout = listen.map(|l| l + Duration::from_secs(5));
        let (status, body) = self.send(
            "GET",
            "/api/v2/workspaceagents/me/external-auth",
            &query,
            None,
            timeout,
        )?;
        match status {
            200 => {
                let reply: ExternalAuthResponse =
                    serde_json::from_str(&body).map_err(|e| ClientError::Api {
                        status,
                        message: format!("unreadable answer: {e}"),
                        detail: String::new(),
                    })?;
                Ok(if reply.is_linked() {
                    Lookup::Token(Box::new(reply))
                } else {
                    Lookup::NotLinked(reply.url)
                })
            }
            404 => {
                let e = error_body(&body);
                Ok(Lookup::NoMatch {
                    message: e.message,
                    detail: e.detail,
                })
            }
            _ => Err(api_error(status, &body)),
        }
    }

    /// Reports that git was refused with the current token.
    pub fn rejected(&self, by: By<'_>) -> Result<(), ClientError> {
        self.rejected_as(by, None)
    }

    /// [`Client::rejected`] for one account of the provider.
    pub fn rejected_as(&self, by: By<'_>, account: Option<&str>) -> Result<(), ClientError> {
        let mut body = match by {
            By::Match(url) => serde_json::json!({ "match": url }),
            By::Id(id) => serde_json::json!({ "id": id }),
        };
        if let (Some(account), Some(fields)) =
            (account.filter(|a| !a.is_empty()), body.as_object_mut())
        {
            fields.insert("account".to_owned(), serde_json::json!(account));
        }
        let (status, text) = self.send(
            "POST",
            "/api/v2/workspaceagents/me/external-auth/rejected",
            &[],
            Some(&body),
            None,
        )?;
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(api_error(status, &text)),
        }
    }
}

/// The fields of a token exchange's answer (RFC 8693 §2.2) this client reads.
#[derive(serde::Deserialize, Default)]
struct ExchangeAnswer {
    access_token: Option<String>,
    expires_in: Option<i64>,
    extauth_revoke_url: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// A GitHub App installation token from a workload exchange.
pub struct AppToken {
    /// The provider.
    pub provider: String,
    /// The token.
    pub token: String,
    /// Where to revoke it when done.
    pub revoke_url: Option<String>,
}

impl std::fmt::Debug for AppToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppToken")
            .field("provider", &self.provider)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// A failure of the identity exchange, as the cache's error type.
struct IdentityFailure(ClientError);

impl From<String> for IdentityFailure {
    fn from(message: String) -> Self {
        Self(ClientError::Identity(message))
    }
}

impl From<ClientError> for IdentityFailure {
    fn from(e: ClientError) -> Self {
        Self(e)
    }
}

/// The `{message, detail}` of an error answer (or the raw text when it is not JSON).
pub fn error_body(text: &str) -> ErrorBody {
    serde_json::from_str(text).unwrap_or_else(|_| ErrorBody {
        message: text.trim().chars().take(200).collect(),
        ..ErrorBody::default()
    })
}

/// An error answer as a [`ClientError`].
pub fn api_error(status: u16, text: &str) -> ClientError {
    let e = error_body(text);
    ClientError::Api {
        status,
        message: terminal_safe(&e.message),
        detail: terminal_safe(&e.detail),
    }
}

/// `text` with its control characters escaped (`\u{1b}`, `\n`), for a terminal: a name or a
/// message from the broker can carry anything, and raw escape sequences would be run by the
/// terminal (rewrite the screen, set the title, worse).
///
/// ```
/// use extauth_git_askpass::workspace::terminal_safe;
/// assert_eq!(terminal_safe("laptop"), "laptop");
/// assert_eq!(terminal_safe("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
/// ```
pub fn terminal_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(terminal_safe("laptop"), "laptop");
        assert_eq!(terminal_safe("naïve ✓"), "naïve ✓");
        let hostile = "a\u{1b}]0;pwned\u{7}b\r\nc\u{9b}2J";
        let safe = terminal_safe(hostile);
        assert!(!safe.chars().any(char::is_control), "{safe:?}");
        assert_eq!(safe, "a\\u{1b}]0;pwned\\u{7}b\\r\\nc\\u{9b}2J");
    }

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn extauth_variables_first_then_coder_agent() {
        let s = settings(&[
            ("EXTAUTH_URL", "http://b:3000/"),
            ("EXTAUTH_TOKEN", "t"),
            ("CODER_AGENT_URL", "http://c"),
        ])
        .unwrap();
        assert_eq!(
            (s.url.as_str(), s.url_variable),
            ("http://b:3000", "EXTAUTH_URL")
        );
        let s = settings(&[
            ("CODER_AGENT_URL", "https://coder.example.com"),
            ("CODER_AGENT_TOKEN", "agent"),
        ])
        .unwrap();
        assert_eq!(s.url_variable, "CODER_AGENT_URL");
        assert_eq!(s.token, "agent");
        assert_eq!(s.login_timeout, Duration::from_secs(300));
    }

    #[test]
    fn token_file() {
        let dir = std::env::temp_dir().join(format!("extauth-token-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let s = settings(&[
            ("EXTAUTH_URL", "http://b"),
            ("EXTAUTH_TOKEN_FILE", dir.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(s.token, "from-file");
        std::fs::remove_file(&dir).unwrap();
        assert!(matches!(
            settings(&[
                ("EXTAUTH_URL", "http://b"),
                ("EXTAUTH_TOKEN_FILE", "/nonexistent/x")
            ]),
            Err(ConfigError::TokenFile {
                variable: "EXTAUTH_TOKEN_FILE",
                ..
            })
        ));
    }

    #[test]
    fn mistakes_name_the_variable() {
        assert_eq!(settings(&[]).unwrap_err(), ConfigError::MissingUrl);
        assert!(
            settings(&[])
                .unwrap_err()
                .to_string()
                .starts_with("EXTAUTH_URL is not set")
        );
        assert_eq!(
            settings(&[("EXTAUTH_URL", "broker:3000"), ("EXTAUTH_TOKEN", "t")])
                .unwrap_err()
                .to_string(),
            "EXTAUTH_URL: \"broker:3000\" is not an http:// or https:// URL; set it to the broker's address, e.g. https://extauth.example.com"
        );
        assert_eq!(
            settings(&[("EXTAUTH_URL", "http://b")])
                .unwrap_err()
                .to_string(),
            "EXTAUTH_TOKEN is not set: set it to a workspace token (create one at http://b/workspace-tokens), or set EXTAUTH_IDENTITY_TOKEN_FILE to a workload identity token a trust policy of the broker accepts"
        );
        // A workload identity instead of a token: kept to be exchanged, nothing read yet.
        let s = settings(&[
            ("EXTAUTH_URL", "http://b"),
            (
                "EXTAUTH_IDENTITY_TOKEN_FILE",
                "/var/run/secrets/extauth/token",
            ),
        ])
        .unwrap();
        assert!(s.token.is_empty());
        assert_eq!(
            s.identity.as_ref().map(|i| i.path.clone()),
            Some("/var/run/secrets/extauth/token".into())
        );
        // A token, when both are set, is what is presented.
        let s = settings(&[
            ("EXTAUTH_URL", "http://b"),
            ("EXTAUTH_TOKEN", "t"),
            ("EXTAUTH_IDENTITY_TOKEN_FILE", "/x"),
        ])
        .unwrap();
        assert!(s.identity.is_none());
        assert_eq!(
            settings(&[
                ("EXTAUTH_URL", "http://b"),
                ("EXTAUTH_TOKEN", "t"),
                ("EXTAUTH_LOGIN_TIMEOUT", "soon")
            ])
            .unwrap_err(),
            ConfigError::BadTimeout("soon".into())
        );
        for (variable, value, says) in [
            (
                "EXTAUTH_AGENT",
                "maybe",
                "EXTAUTH_AGENT: \"maybe\" is not on or off",
            ),
            (
                "EXTAUTH_AGENT_IDLE",
                "forever",
                "EXTAUTH_AGENT_IDLE: \"forever\" is not a duration; write e.g. 90s, 10m or 1h",
            ),
        ] {
            let e = settings(&[
                ("EXTAUTH_URL", "http://b"),
                ("EXTAUTH_TOKEN", "t"),
                (variable, value),
            ])
            .unwrap_err();
            assert_eq!(e.to_string(), says);
        }
        for (value, on) in [
            ("off", false),
            ("no", false),
            ("0", false),
            ("on", true),
            ("", true),
        ] {
            let s = settings(&[
                ("EXTAUTH_URL", "http://b"),
                ("EXTAUTH_TOKEN", "t"),
                ("EXTAUTH_CACHE_DIR", "/run/user/1000/extauth"),
                ("EXTAUTH_AGENT", value),
            ])
            .unwrap();
            assert_eq!(s.agent.is_some(), on, "EXTAUTH_AGENT={value:?}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let s = Settings::new("http://b", "secret-token");
        assert!(!format!("{s:?}").contains("secret-token"));
    }
}
