//! Faults: the server killed with SIGKILL under load loses no audit row for
//! any certificate a client received; hostile clients do not hold it up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jitssh_e2e::*;
use serde_json::json;

#[test]
fn sigkill_under_load_loses_no_issued_certificate() {
    require_e2e();
    let issuer = Arc::new(Issuer::start("jitssh-e2e", vec![]));
    let mut ca = CaServer::start(&issuer.url, "jitssh-e2e");
    // Many identities so the per-identity rate limit does not shape the load.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let url = Arc::new(Mutex::new(ca.url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let work = tempfile::tempdir().unwrap();
    let (_, public) = keygen(work.path(), "k");
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (issuer, received, url, stop, public) = (
                issuer.clone(),
                received.clone(),
                url.clone(),
                stop.clone(),
                public.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let token = issuer.token(&user(&format!("e2e-load{w}x{}", n % 50), &[]));
                    let base = url.lock().unwrap().clone();
                    let Ok(resp) = client
                        .post(format!("{base}/v1/certs/user"))
                        .bearer_auth(token)
                        .json(&json!({"public_key": public}))
                        .send()
                    else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    if resp.status() == 200
                        && let Ok(body) = resp.json::<serde_json::Value>()
                    {
                        let serial = body["serial"].as_str().unwrap().to_string();
                        received.lock().unwrap().push(serial);
                    }
                }
            })
        })
        .collect();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        ca.restart(); // SIGKILL, then start again on the same database
        *url.lock().unwrap() = ca.url.clone();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let received = received.lock().unwrap().clone();
    assert!(
        received.len() > 20,
        "the load ran ({} certificates)",
        received.len()
    );

    let out = ca.ca_command(&["audit", "export"]);
    let issued: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"]["outcome"] == "issued")
        .map(|r| r["event"]["serial"].as_str().unwrap().to_string())
        .collect();
    let mut unique = issued.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), issued.len(), "serials are unique");
    for s in &received {
        assert!(
            issued.contains(s),
            "certificate {s} reached a client but has no audit row"
        );
    }
    let verify = ca.ca_command(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn hostile_clients_do_not_hold_the_server() {
    require_e2e();
    let issuer = Issuer::start("jitssh-e2e", vec![]);
    let ca = CaServer::start(&issuer.url, "jitssh-e2e");
    let addr = ca.url.trim_start_matches("http://").to_string();

    // A client sending its headers one byte a second is cut off (header timeout 5 s).
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if slow.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                closed = true; // an error response, then close
                break;
            }
            Err(_) => {} // read timeout: still open
        }
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    assert!(
        closed,
        "slow client still connected after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(12));

    // Meanwhile, and after, others are served; a 10 MB body is refused early;
    // deeply nested JSON is a 400, not a crash.
    let client = reqwest::blocking::Client::new();
    let big = vec![b'a'; 10 * 1024 * 1024];
    let resp = client
        .post(format!("{}/v1/certs/user", ca.url))
        .bearer_auth("x")
        .header("content-type", "application/json")
        .body(big)
        .send();
    if let Ok(r) = resp {
        assert!(matches!(r.status().as_u16(), 401 | 413), "{}", r.status());
    }
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let token = issuer.token(&user("e2e-nest", &[]));
    let r = client
        .post(format!("{}/v1/certs/user", ca.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        413,
        "100 kB of brackets is over the 64 KiB limit"
    );
    let token = issuer.token(&user("e2e-nest", &[]));
    let nested = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let r = client
        .post(format!("{}/v1/certs/user", ca.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (_, public) = keygen(ca.dir.path(), "k");
    let (s, _) = ca.request_cert(
        &issuer.token(&user("e2e-after", &[])),
        json!({"public_key": public}),
    );
    assert_eq!(s, 200, "still serving");
}
