//! `GIT_ASKPASS` prompts: git runs the program with one argument such as
//! `Username for 'https://github.com': ` and reads one line from its stdout.

use extauth_providers::normalize_git_url;

/// Which question git asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `Username for '…': `.
    Username,
    /// `Password for '…': `.
    Password,
}

/// A parsed prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The question.
    pub asked: Asked,
    /// The user in the URL (`https://me@host` → `me`), empty when none.
    pub user: String,
    /// `scheme://host[:port][/path]`, without the user.
    pub url: String,
}

/// Why a prompt is not one git would send for HTTP credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// Fewer than three words.
    #[error("askpass prompt must contain 3 words; got {0}")]
    TooShort(usize),
    /// Not `Username` or `Password`.
    #[error("unknown prompt type {0:?}")]
    UnknownType(String),
    /// The URL part is not an http(s) URL with a host.
    #[error("unsupported URL in the prompt: {0}")]
    Url(String),
}

/// Whether the arguments look like a `GIT_ASKPASS` call: exactly one, starting with `Username `
/// or `Password `.
pub fn is_askpass(args: &[String]) -> bool {
    matches!(args, [one] if one.starts_with("Username ") || one.starts_with("Password "))
}

/// Parses git's prompt (Coder's rules: third word, quotes and trailing colons stripped).
pub fn parse(prompt: &str) -> Result<Prompt, PromptError> {
    let words: Vec<&str> = prompt.split_whitespace().collect();
    let [kind, _, target, ..] = words.as_slice() else {
        return Err(PromptError::TooShort(words.len()));
    };
    let asked = match *kind {
        "Username" => Asked::Username,
        "Password" => Asked::Password,
        other => return Err(PromptError::UnknownType(other.to_owned())),
    };
    let target = target
        .trim_start_matches(['"', '\''])
        .trim_end_matches(['"', '\'', ':']);
    if !(target.starts_with("http://") || target.starts_with("https://")) {
        let scheme = target.split("://").next().unwrap_or_default();
        return Err(PromptError::Url(format!("unsupported scheme {scheme:?}")));
    }
    let parsed = url::Url::parse(target).map_err(|e| PromptError::Url(e.to_string()))?;
    let url = normalize_git_url(target).map_err(|e| PromptError::Url(e.to_string()))?;
    Ok(Prompt {
        asked,
        user: parsed.username().to_owned(),
        url,
    })
}

/// Coder's answer contract: with a password (gitlab, bitbucket), the username for the
/// `Username` question and the password for the `Password` question; without one (github and
/// the others), the username — which is the token — for both.
pub fn answer<'a>(asked: Asked, username: &'a str, password: &'a str) -> &'a str {
    match (password.is_empty(), asked) {
        (false, Asked::Password) => password,
        _ => username,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coders_vectors() {
        for (prompt, user, url) in [
            (
                "Username for 'https://github.com': ",
                "",
                "https://github.com",
            ),
            (
                "Username for 'https://enterprise.github.com': ",
                "",
                "https://enterprise.github.com",
            ),
            ("Username for 'http://wow.io': ", "", "http://wow.io"),
            (
                "Password for 'https://myuser@github.com': ",
                "myuser",
                "https://github.com",
            ),
            (
                "Password for 'https://myuser@enterprise.github.com': ",
                "myuser",
                "https://enterprise.github.com",
            ),
            (
                "Password for 'http://myuser@wow.io': ",
                "myuser",
                "http://wow.io",
            ),
        ] {
            let parsed = parse(prompt).unwrap();
            assert_eq!(parsed.user, user, "{prompt}");
            assert_eq!(parsed.url, url, "{prompt}");
        }
        assert_eq!(
            parse("Username for 'https://github.com': ").unwrap().asked,
            Asked::Username
        );
        assert_eq!(
            parse("Password for 'https://a@github.com': ")
                .unwrap()
                .asked,
            Asked::Password
        );
        assert_eq!(
            parse("Username for 'https://github.com/org/repo.git': ")
                .unwrap()
                .url,
            "https://github.com/org/repo.git"
        );
    }

    #[test]
    fn refused_prompts() {
        assert_eq!(parse("Username"), Err(PromptError::TooShort(1)));
        assert_eq!(parse(""), Err(PromptError::TooShort(0)));
        assert!(matches!(
            parse("Passphrase for 'x': "),
            Err(PromptError::UnknownType(_))
        ));
        assert!(matches!(
            parse("Username for 'ssh://github.com': "),
            Err(PromptError::Url(_))
        ));
        assert!(matches!(
            parse("Username for 'https://': "),
            Err(PromptError::Url(_))
        ));
    }

    #[test]
    fn detection() {
        assert!(is_askpass(&["Username for 'https://x': ".to_owned()]));
        assert!(is_askpass(&["Password for 'https://x': ".to_owned()]));
        assert!(!is_askpass(&[]));
        assert!(!is_askpass(&["get".to_owned()]));
        assert!(!is_askpass(&["Username ".to_owned(), "x".to_owned()]));
    }

    #[test]
    fn answers() {
        assert_eq!(answer(Asked::Username, "oauth2", "tok"), "oauth2");
        assert_eq!(answer(Asked::Password, "oauth2", "tok"), "tok");
        assert_eq!(answer(Asked::Username, "tok", ""), "tok");
        assert_eq!(answer(Asked::Password, "tok", ""), "tok");
    }
}
