//! The operator console over HTTP: sessions, CSRF, input checks, and forms that name deliveries,
//! never their URLs. The real browser's walk is in console_browser.rs.

mod adminkit;
mod common;
mod forwarding;

use adminkit::*;
use iotpay_devtools::testing::TestDatabase;
use reqwest::redirect::Policy;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// Signs in; returns the session cookie pair (`name=value`) and the Set-Cookie header.
async fn sign_in(admin: &Admin, client: &reqwest::Client, token: &str) -> (u16, Option<String>) {
    let resp = client.post(admin.url("/login")).form(&[("token", token)]).send().await.unwrap();
    let status = resp.status().as_u16();
    let cookie = resp.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    (status, cookie)
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn sessions_are_httponly_strict_expiring_cookies_and_forms_need_the_csrf_token() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let client = no_redirects();

    // Without a session every page sends the browser to the sign-in form.
    for path in ["/", "/events", &format!("/events/evt_{}", "0".repeat(32)), "/counts"] {
        let resp = client.get(admin.url(path)).send().await.unwrap();
        assert_eq!((resp.status().as_u16(), resp.headers()["location"].to_str().unwrap()), (303, "/login"), "{path}");
    }
    let login = client.get(admin.url("/login")).send().await.unwrap();
    assert!(login.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert!(login.text().await.unwrap().contains("name=\"token\""));

    let (status, cookie) = sign_in(&admin, &client, "not-a-token-but-long-enough-000000000").await;
    assert_eq!((status, cookie), (401, None));
    let (status, cookie) = sign_in(&admin, &client, TOKEN).await;
    assert_eq!(status, 303);
    let cookie = cookie.unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    assert!(!cookie.contains(TOKEN), "the cookie never carries the token");
    let pair = cookie.split(';').next().unwrap().to_owned();

    let ids = forwarding::insert_events(&db.pool, "PX", 1).await;
    sqlx::query("UPDATE payment_events SET status = 'unconfirmed' WHERE event_id = $1")
        .bind(&ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    let page = client.get(admin.url(&format!("/events/{}", ids[0]))).header("cookie", &pair).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Re-check with IOTPay"), "{html}");
    let csrf = csrf_of(&html);

    // A cross-site form post carries no valid CSRF token: refused, nothing changes.
    let recheck = admin.url(&format!("/events/{}/recheck", ids[0]));
    for form in [vec![("csrf", "forged")], vec![("csrf", "")]] {
        let resp = client.post(&recheck).header("cookie", &pair).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), 403);
    }
    let missing = client.post(&recheck).header("cookie", &pair).form(&[("x", "1")]).send().await.unwrap();
    assert!(missing.status().is_client_error());
    let other_session = sign_in(&admin, &client, OLD_TOKEN).await.1.unwrap();
    let other_pair = other_session.split(';').next().unwrap();
    let resp = client.post(&recheck).header("cookie", other_pair).form(&[("csrf", &csrf)]).send().await.unwrap();
    assert_eq!(resp.status(), 403, "a CSRF token is bound to its session");
    let without_session = client.post(&recheck).form(&[("csrf", &csrf)]).send().await.unwrap();
    assert_eq!(without_session.status(), 303);
    let status: String = sqlx::query_scalar("SELECT status FROM payment_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(status, "unconfirmed", "nothing changed");

    let ok = client.post(&recheck).header("cookie", &pair).form(&[("csrf", &csrf)]).send().await.unwrap();
    assert_eq!(ok.status(), 303);
    let status: String = sqlx::query_scalar("SELECT status FROM payment_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(status, "pending");

    // A tampered or expired cookie is no session.
    let (name, value) = pair.split_once('=').unwrap();
    let (expiry, mac) = value.split_once('.').unwrap();
    let later = format!("{name}={}.{mac}", expiry.parse::<i64>().unwrap() + 3600);
    let past = format!("{name}=1.{mac}");
    for bad in [later, past] {
        let resp = client.get(admin.url("/events")).header("cookie", bad).send().await.unwrap();
        assert_eq!(resp.status(), 303);
    }
    // Signing out clears the cookie.
    let out = client.post(admin.url("/logout")).header("cookie", &pair).form(&[("csrf", &csrf)]).send().await.unwrap();
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));

    // Hostile search input is escaped, never markup.
    let resp = client
        .get(admin.url("/events"))
        .query(&[("q", "<script>alert(1)</script>")])
        .header("cookie", other_pair)
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>alert"), "{html}");
    let resp = client.get(admin.url("/events?status=paid")).header("cookie", other_pair).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client.get(admin.url("/events?cursor=zzz")).header("cookie", other_pair).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    // A NUL in the search: refused by the API's input rules, never sent to Postgres (which
    // refused it with an error the page called "Database unavailable").
    for q in ["%00", "a%00b", "%1B%5B31m"] {
        let resp = client.get(admin.url(&format!("/events?q={q}"))).header("cookie", other_pair).send().await.unwrap();
        assert_eq!(resp.status(), 400, "q={q}");
    }
}

#[tokio::test]
async fn console_forms_name_deliveries_never_their_urls() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let client = no_redirects();
    let cookie = sign_in(&admin, &client, TOKEN).await.1.unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let secret_url = "http://erp-user:s3cret-pw@127.0.0.1:9/hook?token=t0ken-value".to_owned();
    let ids = forwarding::insert_events(&db.pool, "PQ", 2).await;
    forwarding::confirm(&db.pool, &ids, std::slice::from_ref(&secret_url)).await;
    sqlx::query("UPDATE deliveries SET status = 'dead', dead_at = now(), attempts = 2")
        .execute(&db.pool)
        .await
        .unwrap();
    let delivery_of = |id: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (i64, String)>("SELECT id, status FROM deliveries WHERE event_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let page = |path: String| {
        let (client, pair, url) = (client.clone(), pair.clone(), admin.url(&path));
        async move {
            let resp = client.get(url).header("cookie", pair).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (_, overview) = page("/".into()).await;
    let (_, event) = page(format!("/events/{}", ids[0])).await;
    assert!(overview.contains("Redrive 2 dead"), "{overview}");
    for (name, html) in [("overview", &overview), ("event", &event)] {
        for secret in ["erp-user", "s3cret-pw", "t0ken-value"] {
            assert!(!html.contains(secret), "the {name} page carries {secret}");
        }
    }

    // The event page's Redrive button names its delivery by id.
    let (first, _) = delivery_of(ids[0].clone()).await;
    let (second, _) = delivery_of(ids[1].clone()).await;
    assert!(event.contains(&format!("name=\"delivery\" value=\"{first}\"")), "{event}");
    let csrf = csrf_of(&event);
    let redrive = admin.url(&format!("/events/{}/redrive", ids[0]));
    let post = |url: String, form: Vec<(&'static str, String)>| {
        let (client, pair) = (client.clone(), pair.clone());
        async move { client.post(url).header("cookie", pair).form(&form).send().await.unwrap().status().as_u16() }
    };
    // Another event's delivery is not redriven through this event's page.
    assert_eq!(post(redrive.clone(), vec![("csrf", csrf.clone()), ("delivery", second.to_string())]).await, 303);
    assert_eq!(delivery_of(ids[1].clone()).await.1, "dead");
    assert_eq!(post(redrive.clone(), vec![("csrf", csrf.clone()), ("delivery", first.to_string())]).await, 303);
    assert_eq!(delivery_of(ids[0].clone()).await.1, "pending");
    assert_eq!(delivery_of(ids[1].clone()).await.1, "dead");

    // The overview's button: every dead delivery of the endpoint that delivery goes to.
    let (_, overview) = page("/".into()).await;
    assert!(overview.contains("Redrive 1 dead"), "{overview}");
    let endpoints = admin.url("/endpoints/redrive");
    assert_eq!(post(endpoints.clone(), vec![("csrf", csrf.clone()), ("delivery", "999999".into())]).await, 404);
    assert_eq!(post(endpoints.clone(), vec![("csrf", csrf.clone()), ("delivery", first.to_string())]).await, 303);
    assert_eq!(delivery_of(ids[1].clone()).await.1, "pending");

    // The database answers but refuses the statement: a 500 page, not "unavailable".
    sqlx::query("ALTER TABLE deliveries RENAME TO deliveries_elsewhere").execute(&db.pool).await.unwrap();
    let (status, html) = page("/".into()).await;
    assert_eq!(status, 500, "{html}");
    assert!(html.contains("Internal error") && !html.contains("unavailable"), "{html}");
}
