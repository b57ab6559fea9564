//! Where the broker may send a browser after a login or a sign-in: only to a path on its own
//! site. A `redirect` parameter is anyone's to write into a link, and an open redirect on the
//! broker would lend its name to phishing pages.

/// A path on this site to send the browser to, or `None` for anything that could leave it
/// (`https://evil.example`, `//evil.example`, `/\evil.example`, control characters, which
/// browsers strip before parsing).
///
/// ```
/// use extauth_broker::redirects::safe_redirect;
/// assert_eq!(safe_redirect("/workspace-tokens").as_deref(), Some("/workspace-tokens"));
/// assert_eq!(safe_redirect("//evil.example"), None);
/// assert_eq!(safe_redirect("/\\evil.example"), None);
/// ```
pub fn safe_redirect(value: &str) -> Option<String> {
    let ok = value.starts_with('/')
        && !value.starts_with("//")
        && !value.starts_with("/\\")
        && !value.chars().any(|c| c.is_control() || c == '\\');
    ok.then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_site() {
        assert_eq!(
            safe_redirect("/external-auth/github"),
            Some("/external-auth/github".to_owned())
        );
        assert_eq!(safe_redirect("/a?b=c"), Some("/a?b=c".to_owned()));
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "",
            "/a\nb",
            "/\t/evil.example",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_redirect(bad), None, "{bad}");
        }
    }
}
