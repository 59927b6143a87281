//! My access in a real browser: signing in through the provider's login
//! form, what the page shows (the preview of what the policy grants, the
//! roles and who approves them), the session cookie's flags as the browser
//! holds them, screenshots, requesting a role from the form and withdrawing
//! a request, and logging out with the keyboard.

use fantoccini::Locator;

use super::{
    Driver, browser_present, console_ca, elevate, finish_sign_in, id_token, main_text, section,
    shoot_both, type_into, wait_at, wait_for_text,
};
use crate::provider::{Provider, ProviderUser};

#[test]
fn sign_in_with_a_real_browser_read_my_access_and_sign_out() {
    if !browser_present() {
        return;
    }
    let cora = ProviderUser::new("e2e-cora", &["dba", "oncall", "sre"]);
    let provider = Provider::start(std::slice::from_ref(&cora));
    let dir = tempfile::tempdir().unwrap();
    let (ca, _ca) = console_ca(&provider.issuer, dir.path());

    // Something to show: one grant (auto-approved), one request waiting,
    // whose reason tries to run a script.
    let token = id_token(&provider, &cora);
    for (role, reason) in [
        ("db-admin", "INC-4711 replication lag on db-3"),
        (
            "prod-root",
            "kernel upgrade <script>document.title='pwned'</script>",
        ),
    ] {
        elevate(&ca, &token, role, reason);
    }
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let driver = Driver::start();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let old_session = rt.block_on(async {
        let c = driver.browser().await;

        // No session: the console sends the browser to its sign-in page.
        c.goto(&format!("{ca}/ui/")).await.unwrap();
        wait_at(&c, &format!("{ca}/ui/login")).await;
        shoot_both(&c, "sign-in").await;
        c.find(Locator::LinkText("Sign in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        finish_sign_in(&c, &ca, &provider, &cora).await;
        assert_eq!(wait_at(&c, &format!("{ca}/ui/")).await, format!("{ca}/ui/"));

        // My access: who, the grant with its minutes, the waiting request.
        let main = main_text(&c).await;
        for shown in [
            "My access",
            "e2e-cora",
            "user-e2e-cora",
            provider.issuer.as_str(),
            "db-admin",
            "min left",
            "postgres",
            "prod-root",
            "0 of 2 approvals",
        ] {
            assert!(main.contains(shown), "{shown:?} missing from\n{main}");
        }
        // What the policy grants now (a preview): her own name, her groups'
        // principals and, under the active grant, the role's.
        let now = section(&main, "What you get now", "Active grants");
        for shown in ["nothing was issued", "e2e-cora", "web", "db", "postgres", "15 min"] {
            assert!(now.contains(shown), "{shown:?} missing from\n{now}");
        }
        // Who approves each role, and when it is automatic, from the policy.
        let roles = section(&main, "Request a role", "Who you are");
        for shown in [
            "PostgreSQL superuser (the postgres account) on database hosts",
            "Needs 1 approval from a member of dba-leads or sre-leads",
            "Auto-approved for members of oncall when the reason starts with an incident or change ticket",
            "Needs 2 approvals from members of sre-leads",
        ] {
            assert!(roles.contains(shown), "{shown:?} missing from\n{roles}");
        }
        // The reason's script is text, and did not run.
        assert!(
            main.contains("<script>document.title='pwned'</script>"),
            "{main}"
        );
        assert_eq!(c.title().await.unwrap(), "My access · jitssh");

        // The session cookie as the browser holds it: HttpOnly (no script
        // reads it), SameSite=Lax, only for /ui; not Secure on loopback HTTP.
        let cookie = c.get_named_cookie("jitssh_session").await.unwrap();
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
        assert_eq!(cookie.path(), Some("/ui"));
        assert_ne!(cookie.secure(), Some(true));
        let visible = c.execute("return document.cookie;", vec![]).await.unwrap();
        assert!(
            !visible.as_str().unwrap_or("").contains("jitssh_session"),
            "{visible}"
        );
        let session = cookie.value().to_owned();

        shoot_both(&c, "my-access").await;
        // And its "Request a role" part, which is below the fold.
        c.goto(&format!("{ca}/ui/#request")).await.unwrap();
        shoot_both(&c, "my-access-request").await;

        // Request a role from the form (keyboard: Enter in the reason field).
        c.find(Locator::Css("#role"))
            .await
            .unwrap()
            .select_by_value("db-admin")
            .await
            .unwrap();
        type_into(&c, "#reason", "CHG-99 rotate the replication password\u{E007}").await;
        wait_at(&c, &format!("{ca}/ui/?el=")).await;
        wait_for_text(&c, "Your request for db-admin was approved").await;
        // Withdraw the waiting prod-root request with a click.
        c.find(Locator::XPath("//button[text()='Withdraw this request']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let main = wait_for_text(&c, "Your request for prod-root was withdrawn.").await;
        assert!(main.contains("No request of yours is waiting."), "{main}");

        // Sign out with the keyboard: Enter on the focused button.
        let out = c.find(Locator::Css("form.logout button")).await.unwrap();
        out.send_keys("\u{E007}").await.unwrap();
        wait_at(&c, &format!("{ca}/ui/login?signed_out=1")).await;
        let main = main_text(&c).await;
        assert!(main.contains("You are signed out."), "{main}");
        assert!(
            c.get_named_cookie("jitssh_session").await.is_err(),
            "the cookie is cleared"
        );
        c.close().await.unwrap();
        session
    });

    // The server ended the session: a kept copy of the cookie opens nothing.
    let r = http
        .get(format!("{ca}/ui/"))
        .header("cookie", format!("jitssh_session={old_session}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login?ended=1");
}
