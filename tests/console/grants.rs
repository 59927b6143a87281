//! Grants in a real browser: an operator signed in through the provider's
//! login form finds a grant from the navigation bar, ends it with the
//! keyboard (a reason, then Enter), and sees how it ended; screenshots.

use fantoccini::Locator;
use serde_json::json;

use super::{
    Driver, browser_present, console_ca, elevate, id_token, main_text, section, shoot_both,
    sign_in, type_into, wait_at, wait_for_text,
};
use crate::provider::{Provider, ProviderUser};

#[test]
fn an_operator_ends_a_grant_from_the_browser() {
    if !browser_present() {
        return;
    }
    let cora = ProviderUser::new("e2e-cora", &["dba", "oncall", "sre"]);
    let olga = ProviderUser::new("e2e-olga", &["ca-operators"]);
    let provider = Provider::start(&[cora.clone(), olga.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, _ca) = console_ca(&provider.issuer, dir.path());

    // Cora holds db-admin (auto-approved) and dropped an earlier grant.
    let token = id_token(&provider, &cora);
    let ids = [
        "INC-4702 vacuum the orders table",
        "INC-4711 replication lag on db-3",
    ]
    .map(|reason| elevate(&ca, &token, "db-admin", reason));
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("{ca}/v1/elevations/{}/cancel", ids[0]))
        .bearer_auth(&token)
        .json(&json!({"comment": "done"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let active = &ids[1];

    let driver = Driver::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = driver.browser().await;
        sign_in(&c, &ca, &provider, &olga).await;
        c.find(Locator::LinkText("Grants"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_at(&c, &format!("{ca}/ui/grants")).await;
        let main = main_text(&c).await;
        let now = section(&main, "Active now", "Ended in the last 7 days");
        for shown in [
            "e2e-cora@example.com\nHolds db-admin",
            "left",
            "postgres",
            "INC-4711 replication lag on db-3",
            "Approved by the policy: auto-approved: member of oncall",
            active.as_str(),
            "End now",
        ] {
            assert!(now.contains(shown), "{shown:?} missing from\n{now}");
        }
        let ended = section(&main, "Ended in the last 7 days", "\u{0}");
        assert!(ended.contains("Dropped by the requester at"), "{ended}");
        assert!(ended.contains(&ids[0]), "{ended}");
        shoot_both(&c, "grants").await;

        // End it with the keyboard: a reason, then Enter.
        type_into(&c, &format!("#reason-{active}"), "incident closed\u{E007}").await;
        wait_at(&c, &format!("{ca}/ui/grants?ended={active}")).await;
        let main = wait_for_text(
            &c,
            "The grant of db-admin to e2e-cora@example.com has ended.",
        )
        .await;
        assert!(main.contains("Nobody holds a role now."), "{main}");
        assert!(
            main.contains("Ended by e2e-olga@example.com at ")
                && main.contains(": incident closed"),
            "{main}"
        );
        c.close().await.unwrap();
    });

    // The CA agrees: the grant is revoked, for the API as for the page.
    let r = http
        .get(format!("{ca}/v1/elevations/{active}"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().unwrap()["state"], "revoked");
}
