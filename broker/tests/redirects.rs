//! Redirect sanitising under generated input: whatever `safe_redirect` lets through, a browser
//! resolving it against the broker's page stays on the broker's origin (the WHATWG URL parser
//! of the `url` crate stands in for the browser's).

use extauth_broker::redirects::safe_redirect;
use proptest::prelude::*;

fn stays_on_site(candidate: &str) -> Result<(), TestCaseError> {
    let page = url::Url::parse("https://broker.example/base/external-auth/github").unwrap();
    if let Some(path) = safe_redirect(candidate) {
        prop_assert_eq!(&path, candidate, "kept as given");
        // Browsers drop tabs and newlines before parsing; none may be left to drop.
        let target = page.join(&path);
        prop_assert!(target.is_ok(), "{:?} is not a URL reference", path);
        let target = target.unwrap();
        prop_assert_eq!(
            target.origin(),
            page.origin(),
            "{:?} leaves the site for {}",
            path,
            target
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn anything(candidate in any::<String>()) {
        stays_on_site(&candidate)?;
    }

    /// Strings built from the characters that make URLs leave a site.
    #[test]
    fn url_shaped(candidate in "[/\\\\:@.%?#a-z0-9\t\n\r ]{0,24}") {
        stays_on_site(&candidate)?;
    }

    #[test]
    fn after_a_slash(rest in "[/\\\\:@.%2-5a-fA-F\t ]{0,16}(evil\\.example)?") {
        stays_on_site(&format!("/{rest}"))?;
    }
}
