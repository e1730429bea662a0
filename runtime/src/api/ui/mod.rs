//! The web console: static files served at `/ui`, embedded in the binary.
//!
//! The console is a page of plain JavaScript that calls the public HTTP API with the
//! bearer token the user typed (kept in the tab's `sessionStorage`, sent as
//! `Authorization: Bearer`). These routes therefore serve only files, never data, and sit
//! outside the token check: the page must load before it can ask for the token. Nothing is
//! built or fetched at run time: the files are compiled in with `include_str!`, so the
//! console is the version of the binary that serves it.
//!
//! Every answer carries headers that keep the page from being framed or from running
//! anything but its own files: a strict `Content-Security-Policy` (no inline script, no
//! other origin), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`. The console uses no cookies, so a cross-site request
//! cannot carry the user's credentials: there is nothing for CSRF to ride on.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The content security policy of every console answer: only this origin's scripts,
/// styles and API; no inline code, no frames, no plugins.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its path under `/ui/`, content type and text.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("app.css"),
    },
    Asset {
        path: "/ui/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("api.js"),
    },
    Asset {
        path: "/ui/views.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("views.js"),
    },
    Asset {
        path: "/ui/instance.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("instance.js"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("app.js"),
    },
];

const INDEX: &str = include_str!("index.html");

/// The console's routes: `/ui`, `/ui/` (the page) and its assets. Stateless, so it can be
/// merged into any router.
pub fn router() -> Router {
    let mut router = Router::new()
        .route(
            "/ui",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        );
    for a in ASSETS {
        router = router.route(
            a.path,
            get(move || async move { page(a.content_type, a.body) }),
        );
    }
    router
}

/// The paths [`router`] serves, for tests.
pub fn paths() -> Vec<&'static str> {
    let mut paths = vec!["/ui", "/ui/"];
    paths.extend(ASSETS.iter().map(|a| a.path));
    paths
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // A new binary may serve new files: the browser asks again each time.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn every_console_answer_has_its_type_and_the_security_headers() {
        let index = std::iter::once(("/ui", "text/html; charset=utf-8", INDEX));
        let assets = ASSETS.iter().map(|a| (a.path, a.content_type, a.body));
        for (path, content_type, body) in index.chain(assets) {
            let res = page(content_type, body);
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            let h = res.headers();
            let want = match path.rsplit('.').next() {
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                _ => "text/html",
            };
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(want));
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files_and_has_no_inline_script() {
        for a in ASSETS {
            assert!(INDEX.contains(&format!("\"{}\"", a.path)), "{}", a.path);
        }
        // An inline script would be refused by the policy: every <script> has a src.
        assert_eq!(
            INDEX.matches("<script").count(),
            INDEX.matches("<script src=").count()
        );
        assert!(!INDEX.contains("style="), "inline styles are refused too");
        assert!(!CSP.contains("unsafe"));
    }
}
