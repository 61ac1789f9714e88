//! The dashboard page: one HTML document with its CSS and JavaScript inline, compiled into the
//! binary, so it works on a node with no route to the internet and cannot drift from the
//! [`Report`](super::Report) it renders.
//!
//! The page polls `dashboard.json` (relative, so `/` and `/dashboard` both work) one second
//! after the previous answer or failure, never more than one request at a time, and renders
//! with `textContent` only (problem texts come from the network and are never parsed as HTML).
//! The markup marks what tests and scripts read: `tr[data-group][data-leader]` per group and
//! `tr[data-node][data-health]` per node, inside `<main>`.

/// The dashboard page (served at `/` and `/dashboard`).
pub const PAGE: &str = include_str!("page.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_polls_the_report() {
        assert!(PAGE.starts_with("<!doctype html>"));
        // No external assets: nothing is fetched from another origin.
        for needle in ["http://", "https://", "<link", "src=", "@import"] {
            assert!(!PAGE.contains(needle), "{needle} in the page");
        }
        assert!(PAGE.contains("fetch('dashboard.json'"));
        for id in ["groups", "nodes", "requests", "polls"] {
            assert!(PAGE.contains(&format!("id=\"{id}\"")), "#{id}");
        }
    }
}
