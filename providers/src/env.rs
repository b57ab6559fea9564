//! Reading `CODER_EXTERNAL_AUTH_<N>_<KEY>` (and legacy `CODER_GITAUTH_<N>_<KEY>`) variables into
//! raw, unvalidated per-provider maps.
//!
//! Stricter than Coder on purpose: indices are ordered numerically (Coder sorts the names
//! lexically, so `10` lands before `2`), and an unknown key is an error with a suggestion rather
//! than silently dropped.

use std::collections::BTreeMap;

use crate::error::{ConfigError, ConfigWarning, IndexProblem};

/// The prefix of provider settings.
pub const PREFIX: &str = "CODER_EXTERNAL_AUTH_";
/// The legacy prefix; its providers are appended after those of [`PREFIX`].
pub const LEGACY_PREFIX: &str = "CODER_GITAUTH_";

/// One key of a provider's settings, the `<KEY>` in `CODER_EXTERNAL_AUTH_<N>_<KEY>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)] // Each variant is its key, documented in the README's reference.
pub enum Setting {
    Id,
    Type,
    ClientId,
    ClientSecret,
    AuthUrl,
    TokenUrl,
    ValidateUrl,
    RevokeUrl,
    Regex,
    Scopes,
    ExtraTokenKeys,
    DeviceFlow,
    DeviceCodeUrl,
    NoRefresh,
    AppInstallUrl,
    AppInstallationsUrl,
    DisplayName,
    DisplayIcon,
    PkceMethods,
    ApiBaseUrl,
    /// extauth's: where the broker itself reaches the provider (split-horizon DNS).
    InternalUrl,
    /// extauth's: the HTTP scheme git sends the token with (`basic` or `bearer`).
    GitAuth,
    /// extauth's: a GitHub App's id (or client ID), to mint installation tokens for workloads.
    AppId,
    /// extauth's: the file holding that app's private key (PEM).
    AppPrivateKeyFile,
    /// Coder's deprecated AI Bridge settings: accepted so a Coder environment loads, then ignored.
    McpUrl,
    McpToolAllowRegex,
    McpToolDenyRegex,
}

impl Setting {
    /// Every setting, in the order the README documents them.
    pub const ALL: [Setting; 27] = [
        Self::Id,
        Self::Type,
        Self::ClientId,
        Self::ClientSecret,
        Self::AuthUrl,
        Self::TokenUrl,
        Self::ValidateUrl,
        Self::RevokeUrl,
        Self::Regex,
        Self::Scopes,
        Self::ExtraTokenKeys,
        Self::DeviceFlow,
        Self::DeviceCodeUrl,
        Self::NoRefresh,
        Self::AppInstallUrl,
        Self::AppInstallationsUrl,
        Self::DisplayName,
        Self::DisplayIcon,
        Self::PkceMethods,
        Self::ApiBaseUrl,
        Self::InternalUrl,
        Self::GitAuth,
        Self::AppId,
        Self::AppPrivateKeyFile,
        Self::McpUrl,
        Self::McpToolAllowRegex,
        Self::McpToolDenyRegex,
    ];

    /// The key as written in the variable name, e.g. `VALIDATE_URL`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Id => "ID",
            Self::Type => "TYPE",
            Self::ClientId => "CLIENT_ID",
            Self::ClientSecret => "CLIENT_SECRET",
            Self::AuthUrl => "AUTH_URL",
            Self::TokenUrl => "TOKEN_URL",
            Self::ValidateUrl => "VALIDATE_URL",
            Self::RevokeUrl => "REVOKE_URL",
            Self::Regex => "REGEX",
            Self::Scopes => "SCOPES",
            Self::ExtraTokenKeys => "EXTRA_TOKEN_KEYS",
            Self::DeviceFlow => "DEVICE_FLOW",
            Self::DeviceCodeUrl => "DEVICE_CODE_URL",
            Self::NoRefresh => "NO_REFRESH",
            Self::AppInstallUrl => "APP_INSTALL_URL",
            Self::AppInstallationsUrl => "APP_INSTALLATIONS_URL",
            Self::DisplayName => "DISPLAY_NAME",
            Self::DisplayIcon => "DISPLAY_ICON",
            Self::PkceMethods => "PKCE_METHODS",
            Self::ApiBaseUrl => "API_BASE_URL",
            Self::InternalUrl => "INTERNAL_URL",
            Self::GitAuth => "GIT_AUTH",
            Self::AppId => "APP_ID",
            Self::AppPrivateKeyFile => "APP_PRIVATE_KEY_FILE",
            Self::McpUrl => "MCP_URL",
            Self::McpToolAllowRegex => "MCP_TOOL_ALLOW_REGEX",
            Self::McpToolDenyRegex => "MCP_TOOL_DENY_REGEX",
        }
    }

    /// The setting whose key is exactly `key`.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.key() == key)
    }

    /// Settings Coder still parses but extauth does not use.
    pub fn is_deprecated(self) -> bool {
        matches!(
            self,
            Self::McpUrl | Self::McpToolAllowRegex | Self::McpToolDenyRegex
        )
    }

    /// The closest valid key to a mistyped one, if any is close enough to be a likely typo.
    pub fn suggest(key: &str) -> Option<Self> {
        let upper = key.to_ascii_uppercase();
        let squashed = |s: &str| s.replace(['_', '-'], "");
        let mut best: Option<(usize, Self)> = None;
        for setting in Self::ALL.into_iter().filter(|s| !s.is_deprecated()) {
            let candidate = setting.key();
            let distance = levenshtein(&upper, candidate)
                .min(levenshtein(&squashed(&upper), &squashed(candidate)));
            // Words of a real key (`SECRET`, `DEVICE_URL`) count as a close match.
            let words: Vec<&str> = upper.split('_').filter(|w| !w.is_empty()).collect();
            let fragment = words.iter().any(|w| *w != "URL" && w.len() >= 3)
                && words.iter().all(|w| candidate.split('_').any(|c| c == *w));
            let limit = (candidate.len() / 3).max(2);
            let score = if fragment { 1 } else { distance };
            if (fragment || distance <= limit) && best.is_none_or(|(b, _)| score < b) {
                best = Some((score, setting));
            }
        }
        best.map(|(_, setting)| setting)
    }
}

/// Where a provider's settings came from: a prefix and an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// [`PREFIX`] or [`LEGACY_PREFIX`].
    pub prefix: &'static str,
    /// The `<N>` of the variable names.
    pub index: usize,
}

impl Source {
    /// The full variable name of `setting` for this provider.
    pub fn variable(&self, setting: Setting) -> String {
        format!("{}{}_{}", self.prefix, self.index, setting.key())
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}_*", self.prefix, self.index)
    }
}

/// Coder's `CODER_EXTERNAL_AUTH_ACCESS_TOKEN_<id>`, which shares the prefix but is no setting.
const TERRAFORM_TOKEN_PREFIX: &str = "CODER_EXTERNAL_AUTH_ACCESS_TOKEN_";

/// The settings of one provider as found, before defaults and validation.
#[derive(Debug)]
pub(crate) struct RawProvider {
    pub source: Source,
    values: BTreeMap<Setting, String>,
}

impl RawProvider {
    /// The value of `setting`; empty values count as unset, as in Coder.
    pub fn get(&self, setting: Setting) -> Option<&str> {
        self.values
            .get(&setting)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn variable(&self, setting: Setting) -> String {
        self.source.variable(setting)
    }

    pub fn deprecated_settings(&self) -> impl Iterator<Item = Setting> + '_ {
        self.values.keys().copied().filter(|s| s.is_deprecated())
    }
}

/// Groups provider variables by prefix and index, in configuration order: all of [`PREFIX`] by
/// numeric index, then all of [`LEGACY_PREFIX`]. Problems are pushed to `errors`; the providers
/// that could be read are returned anyway so that validation can report their problems too.
pub(crate) fn collect<I, K, V>(
    vars: I,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigWarning>,
) -> Vec<RawProvider>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut found: BTreeMap<Source, BTreeMap<Setting, String>> = BTreeMap::new();
    let mut from_files = std::collections::BTreeSet::new();
    for (name, value) in vars {
        let name = name.as_ref();
        if name.starts_with(TERRAFORM_TOKEN_PREFIX) {
            // Coder hands tokens to Terraform under this name; it is not a provider setting.
            continue;
        }
        let Some((prefix, rest)) = split_prefix(name) else {
            if looks_like_provider_variable(name) {
                warnings.push(ConfigWarning::new(
                    name,
                    format!(
                        "ignored: provider settings are named {PREFIX}<N>_<KEY> (or {LEGACY_PREFIX}<N>_<KEY>)"
                    ),
                ));
            }
            continue;
        };
        let Some((index, key)) = rest.split_once('_') else {
            errors.push(ConfigError::InvalidName {
                variable: name.to_owned(),
                prefix,
            });
            continue;
        };
        let index = match parse_index(index) {
            Ok(index) => index,
            Err(problem) => {
                errors.push(ConfigError::InvalidIndex {
                    variable: name.to_owned(),
                    prefix,
                    index: index.to_owned(),
                    problem,
                });
                continue;
            }
        };
        // `<KEY>_FILE`: the client id or secret read from a file (a Docker or Kubernetes secret,
        // or a file another container wrote), so it need not sit in the environment.
        if let Some(setting) = key
            .strip_suffix("_FILE")
            .and_then(Setting::from_key)
            .filter(|s| matches!(s, Setting::ClientId | Setting::ClientSecret))
        {
            let path = value.as_ref().trim();
            match std::fs::read_to_string(path) {
                Ok(content) => {
                    let content = content.strip_suffix('\n').unwrap_or(&content);
                    let content = content.strip_suffix('\r').unwrap_or(content);
                    let values = found.entry(Source { prefix, index }).or_default();
                    if values.insert(setting, content.to_owned()).is_some() {
                        errors.push(ConfigError::ValueAndFile {
                            variable: Source { prefix, index }.variable(setting),
                        });
                    }
                    from_files.insert((Source { prefix, index }, setting));
                }
                Err(e) => errors.push(ConfigError::UnreadableFile {
                    variable: name.to_owned(),
                    path: path.to_owned(),
                    reason: e.to_string(),
                }),
            }
            continue;
        }
        let Some(setting) = Setting::from_key(key) else {
            let source = Source { prefix, index };
            errors.push(ConfigError::UnknownSetting {
                variable: name.to_owned(),
                suggestion: Setting::suggest(key).map(|s| source.variable(s)),
            });
            continue;
        };
        let value = value.as_ref();
        // Secrets are taken verbatim; everything else forgives stray whitespace from .env files.
        let value = if setting == Setting::ClientSecret {
            value.to_owned()
        } else {
            value.trim().to_owned()
        };
        let previous = found
            .entry(Source { prefix, index })
            .or_default()
            .insert(setting, value);
        if previous.is_some() && from_files.contains(&(Source { prefix, index }, setting)) {
            errors.push(ConfigError::ValueAndFile {
                variable: name.to_owned(),
            });
        }
    }

    for prefix in [PREFIX, LEGACY_PREFIX] {
        let mut expected = 0;
        for source in found.keys().filter(|s| s.prefix == prefix) {
            if source.index > expected {
                errors.push(ConfigError::MissingIndex {
                    prefix,
                    missing: expected,
                    next: source.index,
                });
            }
            expected = source.index + 1;
        }
    }

    // `Source` orders by prefix first; CODER_EXTERNAL_AUTH_ must come before CODER_GITAUTH_.
    let mut providers: Vec<RawProvider> = found
        .into_iter()
        .map(|(source, values)| RawProvider { source, values })
        .collect();
    providers.sort_by_key(|p| (p.source.prefix != PREFIX, p.source.index));
    providers
}

fn split_prefix(name: &str) -> Option<(&'static str, &str)> {
    [PREFIX, LEGACY_PREFIX]
        .into_iter()
        .find_map(|prefix| name.strip_prefix(prefix).map(|rest| (prefix, rest)))
}

/// Names that are almost provider settings (`CODER_EXTERNAL_AUTH0_ID`, `CODER_EXTERNALAUTH_0_ID`).
fn looks_like_provider_variable(name: &str) -> bool {
    let squashed = name.replace('_', "");
    (squashed.starts_with("CODEREXTERNALAUTH") || squashed.starts_with("CODERGITAUTH"))
        && !name.starts_with("CODER_GIT_AUTH_ACCESS_TOKEN_")
}

/// The largest index accepted; far above any real deployment, low enough to catch typos.
const MAX_INDEX: usize = 9_999;

fn parse_index(index: &str) -> Result<usize, IndexProblem> {
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IndexProblem::NotANumber);
    }
    if index.len() > 1 && index.starts_with('0') {
        return Err(IndexProblem::LeadingZero);
    }
    match index.parse::<usize>() {
        Ok(n) if n <= MAX_INDEX => Ok(n),
        _ => Err(IndexProblem::TooLarge),
    }
}

/// Go's `strconv.ParseBool`, which is what Coder accepts.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Edit distance, for "did you mean" suggestions. Inputs are short keys.
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // `row[j]` is the distance between the part of `a` read so far and `b[..j]`.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = i;
        let mut left = i + 1;
        let mut next = Vec::with_capacity(row.len());
        next.push(left);
        for (cb, &up) in b.iter().zip(row.iter().skip(1)) {
            let value = (diagonal + usize::from(ca != *cb))
                .min(up + 1)
                .min(left + 1);
            next.push(value);
            diagonal = up;
            left = value;
        }
        row = next;
    }
    row.last().copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("VALIDATEURL", "VALIDATE_URL"), 1);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let s = |k: &str| Setting::suggest(k).map(Setting::key);
        assert_eq!(s("VALIDATEURL"), Some("VALIDATE_URL"));
        assert_eq!(s("CLIENTID"), Some("CLIENT_ID"));
        assert_eq!(s("client_id"), Some("CLIENT_ID"));
        assert_eq!(s("SCOPE"), Some("SCOPES"));
        assert_eq!(s("SECRET"), Some("CLIENT_SECRET"));
        assert_eq!(s("DEVICE_URL"), Some("DEVICE_CODE_URL"));
        assert_eq!(s("PKCE"), Some("PKCE_METHODS"));
        assert_eq!(s("REDIRECT_URL"), None);
        assert_eq!(s("WHATEVER"), None);
    }

    #[test]
    fn go_parse_bool() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["yes", "no", "on", "tRUE", "2", "", " true"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn indices() {
        assert_eq!(parse_index("0"), Ok(0));
        assert_eq!(parse_index("12"), Ok(12));
        assert_eq!(parse_index("01"), Err(IndexProblem::LeadingZero));
        assert_eq!(parse_index("x"), Err(IndexProblem::NotANumber));
        assert_eq!(parse_index("-1"), Err(IndexProblem::NotANumber));
        assert_eq!(parse_index(""), Err(IndexProblem::NotANumber));
        assert_eq!(
            parse_index("99999999999999999999999"),
            Err(IndexProblem::TooLarge)
        );
    }
}
