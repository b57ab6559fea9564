//! JSON shapes shared by the broker and its clients (Coder's, so Coder agents and CLIs work
//! against extauth unchanged). These are wire types: fields are only ever added.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::catalog::{GitUsername, ProviderType};
use crate::secret::AccessToken;

/// Reply of `GET /api/v2/workspaceagents/me/external-auth` (Coder's `agentsdk.ExternalAuthResponse`).
///
/// Either linked (`access_token` set, `url` empty) or not (`url` is the page to visit). Every
/// field is always present, as Coder sends it; `expires_at` is `null` when the token does not
/// expire, and Coder's zero time is read as "no expiry".
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExternalAuthResponse {
    /// The provider's access token; empty when not linked.
    #[serde(default = "empty_token")]
    pub access_token: AccessToken,
    /// Extra fields kept from the token response (`EXTRA_TOKEN_KEYS`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub token_extra: serde_json::Map<String, serde_json::Value>,
    /// Where the user links the provider; empty when linked.
    #[serde(default)]
    pub url: String,
    /// The provider type (`github`, `gitlab`, …).
    #[serde(default, rename = "type")]
    pub provider_type: String,
    /// When the access token expires; `None` = never (or unknown).
    #[serde(default, with = "expiry")]
    pub expires_at: Option<OffsetDateTime>,
    /// Legacy: what git's askpass answers for "Username" (the token itself for most types).
    #[serde(default = "empty_token")]
    pub username: AccessToken,
    /// Legacy: what git's askpass answers for "Password" (empty for most types).
    #[serde(default = "empty_token")]
    pub password: AccessToken,
    /// extauth's: the provider that answered, so git can name it back (`state[]`) when the
    /// forge refuses the token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider_id: String,
    /// extauth's: the account at the provider the token is for, when it has a name (a user may
    /// link several).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub account: String,
    /// extauth's: `basic` or `bearer`, how git should send the token over HTTP when it can be
    /// told (git 2.46+); empty from brokers that predate it, meaning basic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_auth: String,
    /// extauth's: something the user should know about this token for this repository, e.g.
    /// that a GitHub App is not installed for its owner and where to install it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notice: String,
}

fn empty_token() -> AccessToken {
    AccessToken::new("")
}

impl Default for AccessToken {
    fn default() -> Self {
        empty_token()
    }
}

impl ExternalAuthResponse {
    /// The reply for a linked provider, with the per-type git username rule applied:
    /// gitlab → `oauth2`/token, bitbucket-* → `x-token-auth`/token, others → token/empty.
    pub fn linked(
        provider_type: &ProviderType,
        access_token: AccessToken,
        token_extra: serde_json::Map<String, serde_json::Value>,
        expires_at: Option<OffsetDateTime>,
    ) -> Self {
        let (username, password) = match provider_type.git_username() {
            GitUsername::OAuth2 | GitUsername::XTokenAuth => (
                AccessToken::new(provider_type.git_username().as_str()),
                access_token.clone(),
            ),
            GitUsername::Token => (access_token.clone(), empty_token()),
        };
        Self {
            access_token,
            token_extra,
            url: String::new(),
            provider_type: provider_type.as_str().to_owned(),
            expires_at,
            username,
            password,
            provider_id: String::new(),
            account: String::new(),
            git_auth: String::new(),
            notice: String::new(),
        }
    }

    /// The reply when the user still has to link the provider at `url`.
    pub fn not_linked(provider_type: &ProviderType, url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            provider_type: provider_type.as_str().to_owned(),
            ..Self::default()
        }
    }

    /// The reply naming the provider that gave it and how git sends its token.
    pub fn for_git(mut self, provider_id: &str, git_auth: crate::GitAuth) -> Self {
        provider_id.clone_into(&mut self.provider_id);
        git_auth.as_str().clone_into(&mut self.git_auth);
        self
    }

    /// The reply naming the account the token is for.
    pub fn for_account(mut self, account: &str) -> Self {
        account.clone_into(&mut self.account);
        self
    }

    /// The reply with a notice for the user.
    pub fn with_notice(mut self, notice: Option<String>) -> Self {
        self.notice = notice.unwrap_or_default();
        self
    }

    /// Whether the reply carries a token (rather than a URL to visit).
    pub fn is_linked(&self) -> bool {
        self.url.is_empty() && !self.access_token.is_empty()
    }
}

impl std::fmt::Debug for ExternalAuthResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The username is the token itself for most types, so it is redacted like one.
        f.debug_struct("ExternalAuthResponse")
            .field("access_token", &self.access_token)
            .field(
                "token_extra_keys",
                &self.token_extra.keys().collect::<Vec<_>>(),
            )
            .field("url", &self.url)
            .field("type", &self.provider_type)
            .field("expires_at", &self.expires_at)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("provider_id", &self.provider_id)
            .field("account", &self.account)
            .field("git_auth", &self.git_auth)
            .field("notice", &self.notice)
            .finish()
    }
}

/// Coder's error body `{message, detail, validations}`, used for every HTTP error.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// One sentence for humans.
    pub message: String,
    /// More context (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Per-field problems of a request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<ValidationError>,
}

/// One invalid field of a request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ValidationError {
    /// The field's name.
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// RFC 3339 timestamps; `null`, absence and Go's zero time (`0001-01-01T00:00:00Z`) all mean none.
mod expiry {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(at) => {
                let text = at
                    .to_offset(time::UtcOffset::UTC)
                    .format(&Rfc3339)
                    .map_err(serde::ser::Error::custom)?;
                serializer.serialize_str(&text)
            }
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        if text.is_empty() {
            return Ok(None);
        }
        let at = OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)?;
        Ok((at.year() > 1).then_some(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn linked(kind: &str) -> serde_json::Value {
        let reply = ExternalAuthResponse::linked(
            &ProviderType::parse(kind),
            AccessToken::new("tok"),
            serde_json::Map::new(),
            Some(datetime!(2026-06-01 15:04:05 UTC)),
        );
        serde_json::to_value(reply).unwrap()
    }

    #[test]
    fn username_rule_per_type() {
        for (kind, username, password) in [
            ("gitlab", "oauth2", "tok"),
            ("bitbucket", "x-token-auth", "tok"),
            ("bitbucket-cloud", "x-token-auth", "tok"),
            ("bitbucket-server", "x-token-auth", "tok"),
            ("github", "tok", ""),
            ("azure-devops", "tok", ""),
            ("azure-devops-entra", "tok", ""),
            ("gitea", "tok", ""),
            ("jfrog", "tok", ""),
            ("slack", "tok", ""),
            ("keycloak", "tok", ""),
        ] {
            let v = linked(kind);
            assert_eq!(v["username"], username, "{kind}");
            assert_eq!(v["password"], password, "{kind}");
            assert_eq!(v["access_token"], "tok");
            assert_eq!(v["url"], "");
        }
    }

    #[test]
    fn full_shape() {
        assert_eq!(
            linked("bitbucket"),
            json!({
                "access_token": "tok",
                "token_extra": {},
                "url": "",
                "type": "bitbucket-cloud",
                "expires_at": "2026-06-01T15:04:05Z",
                "username": "x-token-auth",
                "password": "tok",
            })
        );
        let not_linked = ExternalAuthResponse::not_linked(
            &ProviderType::Github,
            "https://x.example.com/external-auth/github",
        );
        assert!(!not_linked.is_linked());
        assert_eq!(
            serde_json::to_value(&not_linked).unwrap(),
            json!({
                "access_token": "",
                "token_extra": {},
                "url": "https://x.example.com/external-auth/github",
                "type": "github",
                "expires_at": null,
                "username": "",
                "password": "",
            })
        );
    }

    #[test]
    fn reads_coder_replies() {
        let reply: ExternalAuthResponse = serde_json::from_value(json!({
            "access_token": "t", "token_extra": null, "url": "", "type": "github",
            "expires_at": "0001-01-01T00:00:00Z", "username": "t", "password": ""
        }))
        .unwrap();
        assert!(reply.is_linked());
        assert_eq!(reply.expires_at, None);
        let minimal: ExternalAuthResponse =
            serde_json::from_value(json!({"url": "https://x/external-auth/gh"})).unwrap();
        assert!(!minimal.is_linked());
        let with_offset: ExternalAuthResponse = serde_json::from_value(
            json!({"access_token": "t", "expires_at": "2026-06-01T17:04:05+02:00"}),
        )
        .unwrap();
        assert_eq!(
            with_offset.expires_at,
            Some(datetime!(2026-06-01 15:04:05 UTC))
        );
    }

    #[test]
    fn debug_never_shows_tokens() {
        let reply = ExternalAuthResponse::linked(
            &ProviderType::Github,
            AccessToken::new("gho_secret"),
            serde_json::Map::new(),
            None,
        );
        assert!(!format!("{reply:?}").contains("gho_secret"));
    }
}
