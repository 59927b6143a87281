//! The navigation bar of a signed-in page: a link to each page the person's
//! rights open, and the logout form's CSRF token.

use super::rights::{Capability, Rights};

/// The console's pages, in the bar's order: path, label, and the right
/// that opens it.
const PAGES: &[(&str, &str, Capability)] = &[
    ("/ui/", "My access", Capability::MyAccess),
    ("/ui/decide", "To decide", Capability::Decide),
    ("/ui/grants", "Grants", Capability::Grants),
    ("/ui/audit", "Audit", Capability::Audit),
    ("/ui/revocations", "Revocations", Capability::Revocations),
    ("/ui/policy", "Policy", Capability::Policy),
];

/// One link of the bar.
pub(super) struct NavLink {
    pub(super) href: &'static str,
    pub(super) label: &'static str,
    pub(super) current: bool,
}

/// What `console/nav.html` shows.
pub(super) struct Nav {
    pub(super) csrf: String,
    pub(super) links: Vec<NavLink>,
}

impl Nav {
    /// The bar for a person holding `rights`, on the page at `current`.
    pub(super) fn new(rights: Rights, current: &str, csrf: String) -> Nav {
        let links = PAGES
            .iter()
            .filter(|(_, _, cap)| rights.has(*cap))
            .map(|&(href, label, _)| NavLink {
                href,
                label,
                current: href == current,
            })
            .collect();
        Nav { csrf, links }
    }
}
