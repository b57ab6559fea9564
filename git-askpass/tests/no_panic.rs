//! No input makes the credential-protocol or prompt parsers panic.

use extauth_git_askpass::{prompt, protocol::Request};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn protocol_parser(input in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(request) = Request::read(input.as_slice()) {
            let _ = request.match_url();
        }
    }

    #[test]
    fn protocol_parser_on_plausible_lines(lines in prop::collection::vec(
        ("(protocol|host|path|url|username|wwwauth\\[\\]|x)", "[ -~]{0,40}"), 0..10)) {
        let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let request = Request::read(text.as_bytes()).unwrap();
        let _ = request.match_url();
    }

    #[test]
    fn prompt_parser(text in any::<String>()) {
        let _ = prompt::parse(&text);
    }

    #[test]
    fn prompt_parser_on_plausible_prompts(kind in "(Username|Password|x)", target in "['\"]?(https?|ssh)://[a-z@:.0-9/%\\[\\]]{0,30}['\":]{0,3}") {
        let _ = prompt::parse(&format!("{kind} for {target} "));
    }
}
