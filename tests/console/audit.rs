//! Audit in a real browser: an auditor signs in through the provider's
//! login form, searches with the filter form, opens an event, verifies the
//! chain and reads the charts; screenshots of each.

use fantoccini::{Client, Locator};
use serde_json::json;

use super::{Driver, browser_present, console_ca, main_text, shoot_both, sign_in, wait_at};
use crate::provider::{Provider, ProviderUser};
use jitssh_e2e::keygen;

async fn click(c: &Client, locator: Locator<'_>) {
    c.find(locator).await.unwrap().click().await.unwrap();
}

#[test]
fn an_auditor_searches_opens_an_event_verifies_the_chain_and_reads_the_charts() {
    if !browser_present() {
        return;
    }
    let cora = ProviderUser::new("e2e-cora", &["dba", "oncall", "sre"]);
    let audra = ProviderUser::new("e2e-audra", &["security-audit"]);
    let provider = Provider::start(&[cora.clone(), audra.clone()]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, _ca) = console_ca(&provider.issuer, dir.path());

    // Something to audit: certificates, a refused one, elevations.
    let token = || {
        provider.login_tokens(&cora.username, &cora.password)["id_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let http = reqwest::blocking::Client::new();
    let (_, public) = keygen(dir.path(), "k");
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{ca}{path}"))
            .bearer_auth(token())
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for _ in 0..5 {
        assert_eq!(post("/v1/certs/user", json!({"public_key": public})), 200);
    }
    let refused = post(
        "/v1/certs/user",
        json!({"public_key": public, "principals": ["root"]}),
    );
    assert!((400..500).contains(&refused), "{refused}");
    assert_eq!(
        post(
            "/v1/elevations",
            json!({"role": "db-admin", "reason": "INC-4711 replication lag"})
        ),
        201
    );
    assert_eq!(
        post(
            "/v1/elevations",
            json!({"role": "prod-root", "reason": "kernel upgrade"})
        ),
        201
    );

    let driver = Driver::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = driver.browser().await;
        sign_in(&c, &ca, &provider, &audra).await;
        click(&c, Locator::LinkText("Audit")).await;
        wait_at(&c, &format!("{ca}/ui/audit")).await;
        let main = main_text(&c).await;
        for shown in [
            "Events, newest first",
            "user_cert",
            "elevation_request",
            "e2e-cora@example.com",
            "issued",
            "denied",
        ] {
            assert!(main.contains(shown), "{shown:?} missing from\n{main}");
        }
        shoot_both(&c, "audit").await;

        // Filter by the form: only cora's refusals.
        c.find(Locator::Id("f-person"))
            .await
            .unwrap()
            .send_keys("e2e-cora@example.com")
            .await
            .unwrap();
        c.find(Locator::Id("f-outcome"))
            .await
            .unwrap()
            .select_by_value("denied")
            .await
            .unwrap();
        click(&c, Locator::Css("form.filters button[type=submit]")).await;
        wait_at(&c, &format!("{ca}/ui/audit?")).await;
        let rows = c
            .find_all(Locator::Css("table.events tbody tr"))
            .await
            .unwrap();
        assert!(!rows.is_empty());
        for r in &rows {
            let text = r.text().await.unwrap();
            assert!(
                text.contains("denied") && text.contains("e2e-cora"),
                "{text}"
            );
        }

        // One event: every field and its chain link.
        click(&c, Locator::Css("table.events tbody tr td a")).await;
        let main = main_text(&c).await;
        for shown in [
            "Place in the chain",
            "Verifies:",
            "Previous hash",
            "\"outcome\": \"denied\"",
        ] {
            assert!(main.contains(shown), "{shown:?} missing from\n{main}");
        }
        shoot_both(&c, "audit-detail").await;

        // Verify the chain, by keyboard.
        c.goto(&format!("{ca}/ui/audit")).await.unwrap();
        let verify = c
            .find(Locator::Css("form[action='/ui/audit/verify'] button"))
            .await
            .unwrap();
        verify.send_keys("\u{E007}").await.unwrap();
        wait_at(&c, &format!("{ca}/ui/audit/verify")).await;
        let main = main_text(&c).await;
        assert!(main.contains("The chain is intact"), "{main}");

        c.goto(&format!("{ca}/ui/audit/charts")).await.unwrap();
        let main = main_text(&c).await;
        assert!(main.contains("5 certificates issued, 1 refused"), "{main}");
        assert!(main.contains("Elevation requests by role"), "{main}");
        shoot_both(&c, "audit-charts").await;
        c.close().await.unwrap();
    });
}
