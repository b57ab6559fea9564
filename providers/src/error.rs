//! Configuration errors and warnings. Every message names the variable to change and says how.

/// One problem in the provider configuration.
///
/// `Display` gives `VARIABLE: problem; fix`. All problems of a configuration are collected into
/// [`ConfigErrors`] so an operator fixes them in one round rather than one restart each.
/// Why an index is not a plain provider number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexProblem {
    /// Not made of digits only.
    NotANumber,
    /// `01`: ambiguous with `1`.
    LeadingZero,
    /// More providers than anyone configures; almost certainly a mistake.
    TooLarge,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // The variants' fields are self-describing; the messages are the docs.
pub enum ConfigError {
    #[error(
        "{variable}: not a provider setting; name it {prefix}<N>_<KEY>, e.g. {prefix}0_CLIENT_ID"
    )]
    InvalidName {
        variable: String,
        prefix: &'static str,
    },
    #[error("{variable}: provider number {index:?} {}", index_fix(*.problem, .prefix, .index))]
    InvalidIndex {
        variable: String,
        prefix: &'static str,
        index: String,
        problem: IndexProblem,
    },
    #[error(
        "{prefix}{missing}_*: missing, but {prefix}{next}_* is set; providers are numbered from 0 without gaps, so renumber {prefix}{next}_* to {prefix}{missing}_*"
    )]
    MissingIndex {
        prefix: &'static str,
        missing: usize,
        next: usize,
    },
    #[error("{variable}: unknown setting; {}", unknown_fix(.suggestion.as_deref()))]
    UnknownSetting {
        variable: String,
        suggestion: Option<String>,
    },
    #[error("{variable}: {value:?} is not a boolean; use true or false")]
    InvalidBool { variable: String, value: String },
    #[error(
        "{variable}: cannot read {path}: {reason}; point it at a readable file holding the value"
    )]
    UnreadableFile {
        variable: String,
        path: String,
        reason: String,
    },
    #[error("{variable}: set either it or {variable}_FILE, not both")]
    ValueAndFile { variable: String },
    #[error("{variable}: {value:?} is not a git authentication scheme; use basic or bearer")]
    InvalidGitAuth { variable: String, value: String },
    #[error(
        "{variable}: set together with {other} (a GitHub App's id and the file of its private key), or neither"
    )]
    AppKeyPair { variable: String, other: String },
    #[error(
        "{variable}: required; set it to github, gitlab, bitbucket-cloud, bitbucket-server, azure-devops, azure-devops-entra, gitea, jfrog or slack, or to any other name for a generic OAuth2 provider"
    )]
    MissingType { variable: String },
    #[error(
        "{variable}: {id:?}{} is not a valid provider ID: {reason}; use 1 to 32 letters and digits with single hyphens between them, e.g. primary-github",
        if *.from_type { " (taken from TYPE)" } else { "" }
    )]
    InvalidId {
        variable: String,
        id: String,
        reason: &'static str,
        from_type: bool,
    },
    #[error(
        "{variable}: {id:?} is reserved because it clashes with a page of the broker; choose another ID"
    )]
    ReservedId { variable: String, id: String },
    #[error("{variable}: provider ID {id:?} is already used by {first}; {}", duplicate_fix(.variable, *.from_type))]
    DuplicateId {
        variable: String,
        id: String,
        first: String,
        from_type: bool,
    },
    #[error(
        "{variable}: required; set it to the client ID of the OAuth application registered with the provider"
    )]
    MissingClientId { variable: String },
    #[error(
        "{variable}: invalid regular expression ({error}); fix the pattern, e.g. ^(https?://)?github\\.com(/.*)?$"
    )]
    InvalidRegex { variable: String, error: String },
    #[error(
        "{variable}: required because DEVICE_FLOW is true; set it to the provider's device authorization endpoint, or set DEVICE_FLOW=false"
    )]
    DeviceCodeUrlRequired { variable: String },
    #[error("{variable}: required for type {provider_type}; set it, e.g. {example}{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    UrlRequired {
        variable: String,
        provider_type: String,
        example: String,
        hint: Option<String>,
    },
    #[error(
        "{variable}: {value:?} is not a valid URL ({reason}); use an absolute http:// or https:// URL"
    )]
    InvalidUrl {
        variable: String,
        value: String,
        reason: String,
    },
    #[error(
        "{variable}: {value:?} is not an Entra ID v1 authorize URL; use https://login.microsoftonline.com/<tenant-id>/oauth2/authorize"
    )]
    EntraAuthUrl { variable: String, value: String },
    #[error(
        "{variable}: {value:?} is not a supported PKCE method; use S256, or none to turn PKCE off"
    )]
    InvalidPkce { variable: String, value: String },
    #[error(
        "{variable}: {value:?} is not a usable access URL ({reason}); set it to the broker's public base URL, e.g. https://extauth.example.com"
    )]
    InvalidAccessUrl {
        variable: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// The variable (or `PREFIX<N>_*` group) the operator has to change.
    pub fn variable(&self) -> String {
        match self {
            Self::MissingIndex {
                prefix, missing, ..
            } => format!("{prefix}{missing}_*"),
            Self::InvalidName { variable, .. }
            | Self::InvalidIndex { variable, .. }
            | Self::UnknownSetting { variable, .. }
            | Self::InvalidBool { variable, .. }
            | Self::UnreadableFile { variable, .. }
            | Self::ValueAndFile { variable }
            | Self::InvalidGitAuth { variable, .. }
            | Self::AppKeyPair { variable, .. }
            | Self::MissingType { variable }
            | Self::InvalidId { variable, .. }
            | Self::ReservedId { variable, .. }
            | Self::DuplicateId { variable, .. }
            | Self::MissingClientId { variable }
            | Self::InvalidRegex { variable, .. }
            | Self::DeviceCodeUrlRequired { variable }
            | Self::UrlRequired { variable, .. }
            | Self::InvalidUrl { variable, .. }
            | Self::EntraAuthUrl { variable, .. }
            | Self::InvalidPkce { variable, .. }
            | Self::InvalidAccessUrl { variable, .. } => variable.clone(),
        }
    }
}

fn index_fix(problem: IndexProblem, prefix: &str, index: &str) -> String {
    match problem {
        IndexProblem::NotANumber => {
            format!("is not a number; name it {prefix}<N>_<KEY> with N = 0, 1, 2, …")
        }
        IndexProblem::LeadingZero => format!(
            "has a leading zero; write {prefix}{}_…",
            index.trim_start_matches('0').parse::<u64>().unwrap_or(0)
        ),
        IndexProblem::TooLarge => {
            format!("is too large; number providers {prefix}0_*, {prefix}1_*, … without gaps")
        }
    }
}

fn unknown_fix(suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("did you mean {s}?"),
        None => {
            let keys: Vec<&str> = crate::Setting::ALL
                .into_iter()
                .filter(|s| !s.is_deprecated())
                .map(crate::Setting::key)
                .collect();
            format!("valid settings are {}", keys.join(", "))
        }
    }
}

fn duplicate_fix(variable: &str, from_type: bool) -> String {
    if from_type {
        format!(
            "the ID defaults to TYPE, so set {variable} to a unique ID for each provider of this type"
        )
    } else {
        format!("set {variable} to an ID no other provider uses")
    }
}

/// Every problem found in a configuration, with the warnings found along the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems, in configuration order.
    pub errors: Vec<ConfigError>,
    /// Non-fatal findings.
    pub warnings: Vec<ConfigWarning>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{n} problem{} in the external auth configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            write!(f, "\n  - {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A finding that does not stop the broker but probably deserves the operator's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The variable concerned.
    pub variable: String,
    /// What is off and what to do.
    pub message: String,
}

impl ConfigWarning {
    pub(crate) fn new(variable: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}
