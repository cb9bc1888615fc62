//! The admin endpoint's demo page in a real headless Chromium: it connects
//! to the node's WebSocket listener, an `Echo` round trip shows up, a
//! `Broadcast` from a Rust client over TCP appears in the page, and the
//! page's own `Broadcast` reaches that client.

use std::time::Duration;

use bus_cli::node::{BROADCAST, DELIVERY, broadcast_ack_count};
use bus_client::{Client, ClientOptions};
use bus_core::{Command, FrameMut};
use bus_tests::within;

use crate::{
    browser::Browser,
    common::{ServeProcess, http_get},
};

/// Bound on the page reaching a state it waits for over the network.
const PAGE_BOUND: Duration = Duration::from_secs(20);
/// The page's log (what `wait_for` shows when the page does not get
/// there); the whole document while the page has not loaded yet.
const LOG_TEXT: &str =
    "document.getElementById('log')?.innerText ?? document.documentElement.outerHTML";

/// A JS condition: the page's log contains `text`.
fn log_contains(text: &str) -> String {
    let needle = serde_json::to_string(text).expect("JSON string");
    format!("document.getElementById('log')?.innerText.includes({needle}) === true")
}

/// JS that types `text` into the message box and clicks `button`.
fn type_and_click(text: &str, button: &str) -> String {
    let text = serde_json::to_string(text).expect("JSON string");
    format!(
        "document.getElementById('text').value = {text}; \
         document.getElementById('{button}').click(); true"
    )
}

#[compio::test]
async fn demo_page_chats_with_a_rust_client_in_headless_chromium() {
    let node = ServeProcess::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = node.admin.expect("admin address");
    let ws = node.addrs["ws"];
    let (status, config) = http_get(admin, "/demo/config.json");
    assert_eq!(status, 200);
    assert_eq!(
        config,
        format!(
            "{{\"ws\":{{\"host\":\"127.0.0.1\",\"port\":{},\"path\":\"/\"}}}}\n",
            ws.port()
        )
    );

    let mut browser = Browser::launch();
    let tab = browser.open(&format!("http://{admin}/"));
    browser.wait_for(
        &tab,
        "document.body?.dataset.state === 'open'",
        "a WebSocket connection (state `open`)",
        PAGE_BOUND,
        LOG_TEXT,
    );
    assert_eq!(
        browser.evaluate(&tab, "document.getElementById('url').textContent"),
        format!("ws://127.0.0.1:{}/", ws.port()).as_str(),
    );

    // Echo: typed and clicked like a user; the reply comes back to the page.
    browser.evaluate(&tab, &type_and_click("echo from the page", "echo"));
    browser.wait_for(
        &tab,
        &log_contains("← EchoReply #1: echo from the page"),
        "the EchoReply",
        PAGE_BOUND,
        LOG_TEXT,
    );
    let (_, connz) = http_get(admin, "/connz");
    let connz: serde_json::Value = serde_json::from_str(&connz).expect("JSON");
    let page_conn = &connz["shards"][0]["connections"][0];
    assert_eq!(page_conn["transport"], "ws", "{connz}");
    // The page's opening Ping (spec §7) and its Echo.
    assert_eq!(page_conn["frames_in"], 2, "{connz}");

    // A Rust client's Broadcast over TCP shows up in the page.
    let client = within(
        "connect",
        Client::connect(&node.url(), ClientOptions::default()),
    )
    .await
    .expect("connect");
    let ack = within(
        "broadcast ack",
        client.request(FrameMut::with_body(
            Command::from_u8(BROADCAST),
            "hello from rust ✓".as_bytes(),
        )),
    )
    .await
    .expect("broadcast");
    assert_eq!(broadcast_ack_count(&ack), 2, "the page and the Rust client");
    browser.wait_for(
        &tab,
        &log_contains("← Delivery: hello from rust ✓"),
        "the Rust client's Delivery",
        PAGE_BOUND,
        LOG_TEXT,
    );
    let own = within("own delivery", client.recv())
        .await
        .expect("delivery");
    assert_eq!(own.body(), "hello from rust ✓".as_bytes());

    // The page's Broadcast reaches the Rust client, and the page sees its ack.
    browser.evaluate(&tab, &type_and_click("hello from the browser", "broadcast"));
    let delivery = within("the page's delivery", client.recv())
        .await
        .expect("delivery");
    assert_eq!(delivery.header().command_raw(), DELIVERY);
    assert_eq!(delivery.body(), b"hello from the browser");
    browser.wait_for(
        &tab,
        &log_contains("← BroadcastAck #2: addressed 2 clients"),
        "the BroadcastAck of its own Broadcast",
        PAGE_BOUND,
        LOG_TEXT,
    );
    assert!(
        !browser
            .evaluate(&tab, LOG_TEXT)
            .as_str()
            .expect("log text")
            .contains("bad frame"),
        "the page rejected a frame"
    );
    client.close().await;
}
