//! The headers every answer carries, set in one layer so that no route can forget them.
//!
//! The broker's origin can read every linked provider token of a signed-in user, so a script
//! running there is the worst case. Pages allow scripts and styles only from the broker itself
//! (no inline script, so nothing injected could run), cannot be framed (the Revoke, Unlink and
//! "create a token" buttons are not clickjackable), leak no URL through `Referer`, and are never
//! cached (they carry CSRF tokens, answers carry tokens). Anything else that is not a page gets
//! a policy that runs nothing at all.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// The header values, computed once from the settings.
pub struct Policy {
    page_csp: HeaderValue,
    img_src: String,
    hsts: Option<HeaderValue>,
}

/// Left on a page's response by a handler that shows images from elsewhere (an OAuth2 app's
/// icon, registered by an admin): their origins join `img-src` for that page only.
#[derive(Clone, Debug, Default)]
pub struct ImageOrigins(pub Vec<String>);

impl ImageOrigins {
    /// The http(s) origins of `urls` (anything else is dropped).
    pub fn of<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let mut origins: Vec<String> = urls
            .into_iter()
            .filter_map(|icon| url::Url::parse(icon).ok())
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .map(|u| u.origin().ascii_serialization())
            .collect();
        origins.sort();
        origins.dedup();
        Self(origins)
    }
}

fn page_csp(img_src: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src {img_src}; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// What anything but a page may do: nothing (an SVG or a JSON body opened as a document runs no
/// script, loads nothing, and is sandboxed).
const NOTHING: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox",
);

impl Policy {
    /// Images may also come from the origins of configured icons (`DISPLAY_ICON`,
    /// `CODER_OIDC_ICON_URL` as absolute URLs); nothing else leaves the broker's origin.
    pub fn new(state: &AppState) -> Self {
        let mut image_origins: Vec<String> = state
            .providers
            .iter()
            .map(|p| p.display_icon.as_str())
            .chain(
                state
                    .oidc
                    .as_ref()
                    .and_then(|o| o.settings.icon_url.as_deref()),
            )
            .filter_map(|icon| url::Url::parse(icon).ok())
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .map(|u| u.origin().ascii_serialization())
            .collect();
        image_origins.sort();
        image_origins.dedup();
        let mut img_src = "'self'".to_owned();
        for origin in &image_origins {
            img_src.push(' ');
            img_src.push_str(origin);
        }
        let https = state.settings.secure_cookies;
        Self {
            // Origins are URL-serialised (no control characters), so this cannot fail; the
            // fallback still allows no script from elsewhere.
            page_csp: HeaderValue::from_str(&page_csp(&img_src)).unwrap_or(NOTHING),
            img_src,
            hsts: https.then(|| HeaderValue::from_static("max-age=31536000")),
        }
    }
}

/// The layer: sets what the handler did not.
pub async fn apply(State(policy): State<Arc<Policy>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    let extra = response.extensions_mut().remove::<ImageOrigins>();
    let headers = response.headers_mut();
    let csp = if is_page {
        match extra.filter(|e| !e.0.is_empty()) {
            Some(ImageOrigins(origins)) => {
                let img_src = format!("{} {}", policy.img_src, origins.join(" "));
                HeaderValue::from_str(&page_csp(&img_src)).unwrap_or(NOTHING)
            }
            None => policy.page_csp.clone(),
        }
    } else {
        NOTHING
    };
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if let Some(hsts) = &policy.hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    // Only the static assets say they may be cached; everything else may carry a token or a
    // CSRF value and is never stored by a browser or a proxy.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
