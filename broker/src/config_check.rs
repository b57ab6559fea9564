//! `extauth-broker config check`: shows operators what their environment resolves to, the way
//! the broker will see it at start, and every mistake in one go.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use extauth_providers::{
    AccessUrl, ConfigError, ConfigErrors, ConfigWarning, ProviderConfig, Providers,
};
use serde::Serialize;

/// The access URL used when `CODER_ACCESS_URL` is unset.
pub const DEFAULT_ACCESS_URL: &str = "http://127.0.0.1:3000";

/// Options of `config check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Also show which provider a repository URL resolves to, and every candidate.
    #[arg(long = "match", value_name = "URL")]
    pub match_url: Option<String>,
}

/// Output format of list-like commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable.
    Text,
    /// One JSON document.
    Json,
}

/// What the command prints and its exit status, kept apart from the process so tests can
/// call it directly.
#[derive(Debug)]
pub struct Outcome {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// 0 valid, 1 configuration errors, 2 bad `--match` URL.
    pub status: u8,
}

#[derive(Serialize)]
struct Report<'a> {
    access_url: Option<String>,
    /// Whether the OAuth2 authorization server is on (`CODER_OAUTH2_PROVIDER_ENABLE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    oauth2_provider: Option<bool>,
    providers: Vec<ProviderReport<'a>>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    matched: Option<MatchReport<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workload_policies: Option<Vec<crate::workload::PolicySummary>>,
    warnings: Vec<Finding>,
    errors: Vec<Finding>,
}

#[derive(Serialize)]
struct ProviderReport<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    provider_type: &'a str,
    display_name: &'a str,
    client_id: &'a str,
    client_secret: &'static str,
    auth_url: &'a str,
    token_url: &'a str,
    validate_url: Option<&'a str>,
    revoke_url: Option<&'a str>,
    device_code_url: Option<&'a str>,
    regex: Option<&'a str>,
    scopes: &'a [String],
    extra_token_keys: &'a [String],
    device_flow: bool,
    no_refresh: bool,
    pkce_methods: &'static [&'static str],
    api_base_url: Option<&'a str>,
    callback_url: Option<String>,
    askpass_username: &'static str,
    /// `basic` or `bearer` (git 2.46+).
    git_auth: &'static str,
    source: String,
}

#[derive(Serialize)]
struct MatchReport<'a> {
    url: String,
    chosen: Option<&'a str>,
    candidates: Vec<&'a str>,
}

#[derive(Serialize)]
struct Finding {
    variable: String,
    message: String,
}

impl From<&ConfigError> for Finding {
    fn from(error: &ConfigError) -> Self {
        Self {
            variable: error.variable(),
            message: error.to_string(),
        }
    }
}

impl From<&ConfigWarning> for Finding {
    fn from(warning: &ConfigWarning) -> Self {
        Self {
            variable: warning.variable.clone(),
            message: warning.to_string(),
        }
    }
}

impl Finding {
    /// A message of the form `VARIABLE: what is wrong; the fix`.
    fn from_message(message: &str) -> Self {
        let variable = message
            .split([':', ' '])
            .next()
            .unwrap_or_default()
            .to_owned();
        Self {
            variable,
            message: message.to_owned(),
        }
    }
}

/// What the rest of the broker's configuration (server, store, TLS, OIDC sign-in) says, checked
/// by the same code as at start, so `config check` passes only when start would.
#[derive(Debug, Default)]
pub struct OtherSettings {
    /// Messages that would stop the broker, each starting with its variable.
    pub errors: Vec<String>,
    /// Messages it would log as warnings.
    pub warnings: Vec<String>,
    /// Whether the OAuth2 authorization server would be served (`None`: the setting is bad).
    pub oauth2_provider: Option<bool>,
    /// `EXTAUTH_WORKLOAD_POLICIES`, checked against the providers as at start.
    pub workload_policies: Option<std::path::PathBuf>,
}

/// Runs `config check` over `vars` (normally the process environment).
pub fn run(
    vars: Vec<(String, String)>,
    access_url: &str,
    args: &CheckArgs,
    other: &OtherSettings,
) -> Outcome {
    let access = AccessUrl::parse(access_url);
    let loaded = Providers::from_vars(vars);
    let (providers, mut errors, warnings) = match loaded {
        Ok(providers) => {
            let warnings = providers.warnings().to_vec();
            (providers, Vec::new(), warnings)
        }
        Err(ConfigErrors { errors, warnings }) => (Providers::default(), errors, warnings),
    };
    if let Err(e) = &access {
        errors.insert(
            0,
            ConfigError::InvalidAccessUrl {
                variable: "CODER_ACCESS_URL".to_owned(),
                value: access_url.to_owned(),
                reason: e.to_string(),
            },
        );
    }
    let access = access.ok();

    let matched = match args
        .match_url
        .as_deref()
        .map(|url| providers.match_url(url))
    {
        None => None,
        Some(Ok(m)) => Some(MatchReport {
            url: m.normalized,
            chosen: m.chosen.map(|p| p.id.as_str()),
            candidates: m.candidates.iter().map(|p| p.id.as_str()).collect(),
        }),
        Some(Err(e)) => {
            return Outcome {
                stdout: String::new(),
                stderr: format!("extauth-broker: --match: {e}\n"),
                status: 2,
            };
        }
    };

    let mut error_findings: Vec<Finding> = errors.iter().map(Finding::from).collect();
    // The access URL is already reported above, from the same value.
    error_findings.extend(
        other
            .errors
            .iter()
            .map(|m| Finding::from_message(m))
            .filter(|f| f.variable != "CODER_ACCESS_URL"),
    );
    let mut warning_findings: Vec<Finding> = warnings.iter().map(Finding::from).collect();
    warning_findings.extend(other.warnings.iter().map(|m| Finding::from_message(m)));
    let workload_policies = match &other.workload_policies {
        None => None,
        Some(path) => {
            match crate::workload::policy::load(path, &crate::workload::known(&providers)) {
                Ok(policies) => Some(
                    policies
                        .iter()
                        .map(crate::workload::summarize)
                        .collect::<Vec<_>>(),
                ),
                Err(e) => {
                    error_findings.push(Finding::from_message(&e));
                    None
                }
            }
        }
    };
    let status = u8::from(!error_findings.is_empty());
    let report = Report {
        oauth2_provider: other.oauth2_provider,
        access_url: access.as_ref().map(ToString::to_string),
        providers: providers
            .iter()
            .map(|p| provider_report(p, access.as_ref()))
            .collect(),
        matched,
        workload_policies,
        warnings: warning_findings,
        errors: error_findings,
    };
    match args.output {
        OutputFormat::Json => Outcome {
            stdout: serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
            stderr: String::new(),
            status,
        },
        OutputFormat::Text => text(&report, &providers, status),
    }
}

fn provider_report<'a>(p: &'a ProviderConfig, access: Option<&AccessUrl>) -> ProviderReport<'a> {
    ProviderReport {
        id: p.id.as_str(),
        provider_type: p.provider_type.as_str(),
        display_name: &p.display_name,
        client_id: &p.client_id,
        client_secret: if p.client_secret.is_some() {
            "set"
        } else {
            "unset"
        },
        auth_url: p.auth_url.as_str(),
        token_url: p.token_url.as_str(),
        validate_url: p.validate_url.as_ref().map(url::Url::as_str),
        revoke_url: p.revoke_url.as_ref().map(url::Url::as_str),
        device_code_url: p.device_code_url.as_ref().map(url::Url::as_str),
        regex: p.regex.as_ref().map(regex::Regex::as_str),
        scopes: &p.scopes,
        extra_token_keys: &p.extra_token_keys,
        device_flow: p.device_flow,
        no_refresh: p.no_refresh,
        pkce_methods: p.pkce.as_list(),
        api_base_url: p.api_base_url.as_ref().map(url::Url::as_str),
        callback_url: access.map(|a| p.callback_url(a).to_string()),
        askpass_username: p.git_username().as_str(),
        git_auth: p.git_auth.as_str(),
        source: p.source.to_string(),
    }
}

fn text(report: &Report<'_>, providers: &Providers, status: u8) -> Outcome {
    let mut out = String::new();
    let mut err = String::new();
    if status == 0 {
        if let Some(access) = &report.access_url {
            let _ = writeln!(out, "access URL: {access}");
            if report.oauth2_provider == Some(true) {
                let _ = writeln!(
                    out,
                    "OAuth2 provider: on (discovery at {}/.well-known/openid-configuration; CODER_OAUTH2_PROVIDER_ENABLE=false turns it off)",
                    access.trim_end_matches('/')
                );
            } else if report.oauth2_provider == Some(false) {
                let _ = writeln!(
                    out,
                    "OAuth2 provider: off (CODER_OAUTH2_PROVIDER_ENABLE=false): /oauth2/* and the discovery documents answer 404"
                );
            }
        }
        if providers.is_empty() {
            let _ = writeln!(
                out,
                "no external auth providers configured; set CODER_EXTERNAL_AUTH_0_TYPE and CODER_EXTERNAL_AUTH_0_CLIENT_ID to add one"
            );
        }
        for p in &report.providers {
            let _ = writeln!(out, "\n{} ({}) from {}", p.id, p.provider_type, p.source);
            let mut field = |name: &str, value: &str| {
                let _ = writeln!(out, "  {name:<16} {value}");
            };
            field("display name", p.display_name);
            field("client id", p.client_id);
            field("client secret", p.client_secret);
            field("auth URL", p.auth_url);
            field("token URL", p.token_url);
            field(
                "validate URL",
                p.validate_url
                    .unwrap_or("(none: tokens are trusted until they expire)"),
            );
            field("revoke URL", p.revoke_url.unwrap_or("(none)"));
            if p.device_flow || p.device_code_url.is_some() {
                field("device code URL", p.device_code_url.unwrap_or("(none)"));
            }
            field("device flow", yes_no(p.device_flow));
            field(
                "refresh",
                if p.no_refresh {
                    "never (NO_REFRESH)"
                } else {
                    "yes"
                },
            );
            field(
                "regex",
                p.regex.unwrap_or("(none: never chosen for git URLs)"),
            );
            field("scopes", &p.scopes.join(" "));
            if !p.extra_token_keys.is_empty() {
                field("extra token keys", &p.extra_token_keys.join(" "));
            }
            field("PKCE", &p.pkce_methods.join(" "));
            if let Some(api) = p.api_base_url {
                field("API base URL", api);
            }
            field("git username", p.askpass_username);
            field("git auth", p.git_auth);
            if let Some(callback) = &p.callback_url {
                field("callback URL", callback);
            }
        }
    }
    if status == 0 {
        for p in report.workload_policies.iter().flatten() {
            let _ = writeln!(out, "\nworkload policy {}", p.name);
            let mut field = |name: &str, value: &str| {
                let _ = writeln!(out, "  {name:<16} {value}");
            };
            field("issuer", &p.issuer);
            field("keys", &p.keys);
            field("audience", &p.audiences.join(", "));
            field("max age", &format!("{} s", p.max_age_seconds));
            for (claim, rule) in &p.claims {
                field(&format!("claim {claim}"), rule);
            }
            field("acts as", &p.act_as);
            field(
                "providers",
                &if p.providers.is_empty() {
                    "(none)".to_owned()
                } else {
                    p.providers.join(", ")
                },
            );
            field("scopes", &p.scopes.join(" "));
            field("lifetime", &format!("{} s", p.lifetime_seconds));
            if let Some(app) = &p.github_app {
                field("GitHub App", &app.to_string());
            }
        }
    }
    if let Some(m) = &report.matched {
        let _ = writeln!(out);
        match m.chosen {
            Some(chosen) => {
                let _ = writeln!(
                    out,
                    "{} → {chosen} (candidates in order: {})",
                    m.url,
                    m.candidates.join(", ")
                );
            }
            None => {
                let _ = writeln!(out, "{} → no provider matches", m.url);
                for p in &report.providers {
                    let _ = writeln!(out, "  {}: {}", p.id, p.regex.unwrap_or("(no regex)"));
                }
            }
        }
    }
    for w in &report.warnings {
        let _ = writeln!(err, "warning: {}", w.message);
    }
    if status != 0 {
        let n = report.errors.len();
        let _ = writeln!(
            err,
            "error: {n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        );
        for e in &report.errors {
            let _ = writeln!(err, "  - {}", e.message);
        }
    }
    Outcome {
        stdout: out,
        stderr: err,
        status,
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}
