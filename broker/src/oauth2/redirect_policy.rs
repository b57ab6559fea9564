//! Pure rules about redirect URIs and hosts, shared by the settings (checked at start), app
//! registration and client metadata documents.

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (host
/// patterns such as `*.example.com`; both already lowercase).
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether `host` is a loopback host an app on this machine listens on (RFC 8252 §7.3).
pub fn loopback(url: &url::Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
}

/// Checks one pattern of `EXTAUTH_OAUTH2_DCR_REDIRECTS`.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "loopback" || pattern == "*:" {
        return Ok(());
    }
    if let Some(host) = pattern.strip_prefix("https://") {
        return if host.is_empty() || host.contains('/') {
            Err("must be https://HOST (a host pattern, no path)".to_owned())
        } else {
            Ok(())
        };
    }
    match pattern.strip_suffix(':') {
        Some(scheme)
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b)) =>
        {
            Ok(())
        }
        _ => Err("is not loopback, SCHEME:, *: or https://HOST".to_owned()),
    }
}

/// Whether the policy lets a self-registered client redirect to `uri` (checked first like any
/// app's redirect URI).
pub fn policy_allows(patterns: &[String], uri: &url::Url) -> bool {
    patterns.iter().any(|p| match p.as_str() {
        "loopback" => uri.scheme() == "http" && loopback(uri),
        "*:" => !matches!(uri.scheme(), "http" | "https"),
        p if p.starts_with("https://") => {
            uri.scheme() == "https"
                && glob(
                    &p["https://".len()..],
                    &uri.host_str().unwrap_or_default().to_ascii_lowercase(),
                )
        }
        p => p.strip_suffix(':') == Some(uri.scheme()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("*.example.com", "a.example.com"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(!glob("*.example.com", "a.example.com.evil"));
        assert!(glob("app.example.com", "app.example.com"));
        assert!(!glob("app.example.com", "xapp.example.com"));
        assert!(glob("a*b*c", "a-b-c"));
    }

    fn allows(uri: &str) -> bool {
        let patterns: Vec<String> = ["loopback", "*:", "https://*.example.com"]
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        policy_allows(&patterns, &url::Url::parse(uri).unwrap())
    }

    #[test]
    fn the_policy_reads_loopback_schemes_and_hosts() {
        assert!(allows("http://127.0.0.1/callback"));
        assert!(allows("http://localhost:33418/cb"));
        assert!(allows(
            "vscode://vscode.github-authentication/did-authenticate"
        ));
        assert!(allows("cursor://anysphere.cursor-retrieval/oauth/callback"));
        assert!(allows("https://app.example.com/cb"));
        assert!(!allows("https://evil.test/cb"));
        assert!(!allows("http://app.example.com/cb"));
        for good in ["loopback", "*:", "vscode:", "https://*.example.com"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "https://", "https://a/b", "ftp"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
