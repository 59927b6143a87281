//! The console's static files, embedded in the binary (no CDN, works
//! offline): one stylesheet, and the script of To decide's live updates
//! (the pages work without it).

use axum::http::header;
use axum::response::IntoResponse;

const CSS: &str = include_str!("../../assets/console.css");
const DECIDE_JS: &str = include_str!("../../assets/decide.js");

pub(super) async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
}

pub(super) async fn decide_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        DECIDE_JS,
    )
}
