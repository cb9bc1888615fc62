//! Every transport scenario over WebSocket, plus what only WebSocket has.

use bus_tests::{scenarios, transport::Ws};

/// Counts allocations per thread, for the memory bound of
/// `message_over_the_limit_is_refused_before_it_is_buffered`.
#[global_allocator]
static ALLOC: bus_tests::alloc::Counting = bus_tests::alloc::Counting;

bus_tests::transport_suite!(Ws);

#[compio::test]
async fn silent_client_gets_idle_timeout_at_the_first_frame_grace() {
    bus_tests::scenarios::silent_client_gets_idle_timeout_at_the_first_frame_grace::<Ws>().await;
}

#[compio::test]
async fn a_client_that_pings_first_stays_past_the_grace() {
    bus_tests::scenarios::a_client_that_pings_first_stays_past_the_grace::<Ws>().await;
}
bus_tests::websocket_suite!(Ws);

#[compio::test]
async fn silent_peer_is_dropped_after_handshake_grace() {
    scenarios::silent_peer_is_dropped_after_handshake_grace::<Ws>().await;
}

#[compio::test]
async fn read_cancelled_while_pending_loses_nothing() {
    scenarios::read_cancelled_while_pending_loses_nothing::<Ws>().await;
}

#[compio::test]
async fn admission_refuses_connection_n_plus_1_counts_it_and_reuses_a_freed_slot() {
    bus_tests::admission::connection_n_plus_1_is_refused_counted_and_a_freed_slot_is_reused::<
        bus_tests::transport::Ws,
    >()
    .await;
}

#[compio::test]
async fn admission_refuses_handshakes_beyond_max_handshakes_until_one_ends() {
    bus_tests::admission::handshakes_beyond_the_cap_are_refused_until_one_ends::<
        bus_tests::transport::Ws,
    >()
    .await;
}

/// WebSocket conformance and refusals of this crate's own framing and
/// upgrade, each over a real socket with a hand-built client.
mod conformance {
    use async_tungstenite::tungstenite::Message;
    use bus_core::{CloseReason, GoodbyeReason, limits::PROTOCOL_ID};
    use bus_tests::{
        client::{RawClient, WS_MASK, tcp_connect, ws_wire_frame},
        frames::{ECHO, ECHO_REPLY, RECORD, app, assert_pattern},
        scenarios::{self, assert_goodbye, start, stop, test_config},
        transport::Ws,
        within,
    };
    use compio::{
        BufResult,
        io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    };

    /// Sends `head` as an upgrade request on a raw socket and returns the
    /// whole answer (the server closes after a refusal).
    async fn raw_upgrade(addr: std::net::SocketAddr, head: &str) -> String {
        let mut stream = tcp_connect(addr).await;
        let BufResult(res, _) =
            within("raw write", stream.write_all(head.as_bytes().to_vec())).await;
        res.expect("raw write");
        let BufResult(res, answer) = within("the answer", stream.read_to_end(Vec::new())).await;
        res.expect("read the answer");
        String::from_utf8(answer).expect("an HTTP answer is ASCII")
    }

    fn request(method: &str, version: &str, extra: &str) -> String {
        format!(
            "{method} / {version}\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: {PROTOCOL_ID}\r\n{extra}\r\n"
        )
    }

    const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    const V13: &str = "Sec-WebSocket-Version: 13\r\n";

    /// The status line, whether `header` is among the headers, and the body.
    fn split(answer: &str) -> (&str, &str, &str) {
        let (head, body) = answer.split_once("\r\n\r\n").expect("a complete head");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status, headers, body)
    }

    /// A bad upgrade gets its HTTP status, a short body, and no upgrade;
    /// the node keeps serving.
    #[compio::test]
    async fn bad_upgrades_get_their_http_status() {
        let node = start::<Ws>(test_config()).await;
        let cases = [
            (
                request("POST", "HTTP/1.1", &format!("{KEY}{V13}")),
                "405",
                Some("Allow: GET"),
            ),
            (
                request("GET", "HTTP/1.0", &format!("{KEY}{V13}")),
                "400",
                None,
            ),
            (request("GET", "HTTP/1.1", V13), "400", None),
            (
                request(
                    "GET",
                    "HTTP/1.1",
                    &format!("{KEY}Sec-WebSocket-Version: 8\r\n"),
                ),
                "426",
                Some("Sec-WebSocket-Version: 13"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
                "426",
                None,
            ),
            ("\u{1}\u{2} garbage\r\n\r\n".to_owned(), "400", None),
        ];
        for (head, status, header) in &cases {
            let answer = raw_upgrade(node.addr, head).await;
            let (line, headers, body) = split(&answer);
            assert!(
                line.starts_with(&format!("HTTP/1.1 {status} ")),
                "{head:?} → {answer:?}"
            );
            if let Some(header) = header {
                assert!(headers.contains(header), "{head:?} → {answer:?}");
            }
            assert!(
                !body.is_empty() && body.len() < 200,
                "a short body: {answer:?}"
            );
            assert!(headers.contains(&format!("Content-Length: {}", body.len())));
        }
        assert_eq!(node.bus.stats().handshake_failures, cases.len() as u64);
        assert_eq!(node.bus.stats().connections_total, 0, "no upgrade");
        let (mut client, _) = scenarios::connect::<Ws>(&node).await;
        client.send(&app(ECHO, 1, 10)).await;
        assert_eq!(client.recv_frame().await.header().command_raw(), ECHO_REPLY);
        stop(&node).await;
    }

    /// Frames sent with the upgrade request, before the `101`, are not lost.
    #[compio::test]
    async fn frames_sent_with_the_request_are_kept() {
        let node = start::<Ws>(test_config()).await;
        let mut stream = tcp_connect(node.addr).await;
        let mut wire = request("GET", "HTTP/1.1", &format!("{KEY}{V13}")).into_bytes();
        wire.extend(ws_wire_frame(
            0x82,
            Some(WS_MASK),
            app(ECHO, 7, 100).as_bytes(),
        ));
        let BufResult(res, _) = within("raw write", stream.write_all(wire)).await;
        res.expect("raw write");
        // The 101 and the reply: read until the reply's last byte is there.
        let mut got = Vec::new();
        let complete = |got: &[u8]| {
            got.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .is_some_and(|at| got.len() >= at + 4 + 4 + 356)
        };
        while !complete(&got) {
            let BufResult(res, buf) =
                within("the answer", stream.read(Vec::with_capacity(4096))).await;
            assert!(res.expect("read") > 0, "closed early: {got:?}");
            got.extend_from_slice(&buf);
        }
        let end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        assert!(got.starts_with(b"HTTP/1.1 101 "));
        // Server frames are unmasked: 0x82, 126, u16 length, then the frame.
        let reply = &got[end..];
        assert_eq!(
            &reply[..4],
            &[0x82, 126, 1, 100],
            "one binary message of 356 bytes"
        );
        let frame = bus_tests::client::decode_message(&reply[4..4 + 356]).expect("a frame");
        assert_eq!(frame.header().request(), 7);
        assert_eq!(frame.header().command_raw(), ECHO_REPLY);
        stop(&node).await;
    }

    /// A close reason that is not UTF-8 → `Goodbye(MalformedFrame)`, close
    /// 1007 (RFC 6455 §7.4.1), not 1003.
    #[compio::test]
    async fn close_reason_with_invalid_utf8_gets_close_1007() {
        let node = start::<Ws>(test_config()).await;
        let (mut client, peer) = scenarios::connect::<Ws>(&node).await;
        let wire = ws_wire_frame(0x88, Some(WS_MASK), &[0x03, 0xE8, 0xFF, 0xFE]);
        client.write_below_framing(&wire).await.expect("written");
        client
            .expect_goodbye_then_close_code(GoodbyeReason::MalformedFrame, 1007)
            .await;
        assert_eq!(
            node.events.lost(peer).await,
            CloseReason::ProtocolViolation(GoodbyeReason::MalformedFrame)
        );
        stop(&node).await;
    }

    /// A WebSocket frame announcing 2^63 bytes: the Goodbye detail states
    /// that size and the limit, untruncated, in the spec's wording.
    #[compio::test]
    async fn goodbye_for_a_huge_frame_states_its_real_size_and_the_limit() {
        let config = test_config();
        let limit = config.max_message_size_bytes;
        let node = start::<Ws>(config).await;
        let (mut client, _) = scenarios::connect::<Ws>(&node).await;
        let mut wire = vec![0x82, 0xFF];
        wire.extend_from_slice(&(1u64 << 63).to_be_bytes());
        wire.extend_from_slice(&WS_MASK);
        client.write_below_framing(&wire).await.expect("written");
        let goodbye = assert_goodbye(&client.recv_frame().await, GoodbyeReason::FrameTooLarge);
        assert_eq!(
            goodbye.detail,
            format!("frame size {} exceeds max_message_size {limit}", 1u64 << 63)
        );
        stop(&node).await;
    }

    /// Sends `wire` and expects `Goodbye(MalformedFrame)` and close 1002
    /// without sending anything more (bounded by `within`): the server did
    /// not wait for the rest of the message.
    async fn expect_refused_early(wire: &[u8]) {
        let node = start::<Ws>(test_config()).await;
        let (mut client, peer) = scenarios::connect::<Ws>(&node).await;
        client.write_below_framing(wire).await.expect("written");
        client
            .expect_goodbye_then_close_code(GoodbyeReason::MalformedFrame, 1002)
            .await;
        assert_eq!(
            node.events.lost(peer).await,
            CloseReason::ProtocolViolation(GoodbyeReason::MalformedFrame)
        );
        assert_eq!(node.bus.stats().frames_in, 0, "nothing delivered");
        stop(&node).await;
    }

    /// A fragmented message whose frame header announces 256 bytes is
    /// refused at byte 257 of its payload: a first fragment of exactly the
    /// 256-byte frame, then a continuation (not final) carrying one byte;
    /// nothing else is sent, and the refusal comes anyway.
    #[compio::test]
    async fn fragmented_message_is_refused_at_the_byte_past_its_size() {
        let frame = app(RECORD, 1, 0);
        assert_eq!(frame.len(), 256);
        let mut wire = ws_wire_frame(0x02, Some(WS_MASK), frame.as_bytes());
        wire.extend(ws_wire_frame(0x00, Some(WS_MASK), &[9]));
        expect_refused_early(&wire).await;
    }

    /// One WebSocket frame announcing 300 bytes for a 256-byte frame, of
    /// which only the 256 are sent: refused without waiting for the rest.
    #[compio::test]
    async fn message_longer_than_its_frame_is_refused_from_its_header() {
        let frame = app(RECORD, 1, 0);
        let mut wire = vec![0x82, 0x80 | 0x7E, 0x01, 0x2C];
        wire.extend_from_slice(&WS_MASK);
        wire.extend(
            frame
                .as_bytes()
                .iter()
                .zip(WS_MASK.iter().cycle())
                .map(|(b, k)| b ^ k),
        );
        expect_refused_early(&wire).await;
    }

    /// A binary message in three fragments with a ping between them is
    /// reassembled into one frame; the ping gets its pong.
    #[compio::test]
    async fn continuation_frames_are_reassembled() {
        let node = start::<Ws>(test_config()).await;
        let (mut client, _) = scenarios::connect::<Ws>(&node).await;
        let frame = app(ECHO, 5, 5000);
        let bytes = frame.as_bytes();
        let mut wire = ws_wire_frame(0x02, Some(WS_MASK), &bytes[..100]);
        wire.extend(ws_wire_frame(0x00, Some(WS_MASK), &bytes[100..3000]));
        wire.extend(ws_wire_frame(0x89, Some(WS_MASK), b"mid"));
        wire.extend(ws_wire_frame(0x80, Some(WS_MASK), &bytes[3000..]));
        client.write_below_framing(&wire).await.expect("written");
        match client.recv_message().await {
            Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"mid"),
            other => panic!("expected the pong first, got {other:?}"),
        }
        let reply = client.recv_frame().await;
        assert_eq!(reply.header().request(), 5);
        assert_pattern(reply.body(), 5, 5000);
        assert_eq!(node.bus.stats().frames_in, 1);
        stop(&node).await;
    }

    /// The client's close frame is answered with a close frame carrying the
    /// same code, then the server ends the stream.
    #[compio::test]
    async fn close_handshake_is_echoed() {
        let node = start::<Ws>(test_config()).await;
        let (mut client, peer) = scenarios::connect::<Ws>(&node).await;
        let wire = ws_wire_frame(0x88, Some(WS_MASK), &[0x0F, 0xA0, b'b', b'y', b'e']); // 4000
        client.write_below_framing(&wire).await.expect("written");
        let mut closed = None;
        while closed.is_none() {
            match client.recv().await {
                Ok(frame) => panic!("expected the close reply, got {frame:?}"),
                Err(_) => closed = Some(client.close_frame().cloned()),
            }
        }
        let close = closed.flatten().expect("a close frame");
        assert_eq!(u16::from(close.code), 4000, "echoed: {close:?}");
        assert_eq!(node.events.lost(peer).await, CloseReason::PeerClosed);
        stop(&node).await;
    }

    /// Writes `wire` and expects the socket dropped without a close frame
    /// (RFC 6455 "fail the connection"), as the existing framing tests do.
    async fn expect_dropped(wire: &[u8]) {
        let node = start::<Ws>(test_config()).await;
        let (mut client, peer) = scenarios::connect::<Ws>(&node).await;
        client.write_below_framing(wire).await.expect("written");
        assert!(client.recv().await.is_err(), "dropped");
        assert!(client.close_frame().is_none(), "{:?}", client.close_frame());
        assert_eq!(
            node.events.lost(peer).await,
            CloseReason::Io(std::io::ErrorKind::InvalidData)
        );
        assert_eq!(node.bus.stats().frames_in, 0);
        stop(&node).await;
    }

    /// A ping without FIN (a fragmented control frame) fails the connection.
    #[compio::test]
    async fn fragmented_control_frame_drops_the_socket() {
        expect_dropped(&ws_wire_frame(0x09, Some(WS_MASK), b"x")).await;
    }

    /// A continuation frame outside any message fails the connection.
    #[compio::test]
    async fn continuation_without_a_message_drops_the_socket() {
        expect_dropped(&ws_wire_frame(
            0x80,
            Some(WS_MASK),
            app(RECORD, 1, 0).as_bytes(),
        ))
        .await;
    }

    /// A close code that may not be sent (1005) fails the connection.
    #[compio::test]
    async fn close_with_a_reserved_code_drops_the_socket() {
        expect_dropped(&ws_wire_frame(0x88, Some(WS_MASK), &[0x03, 0xED])).await;
    }

    /// A message larger than the read buffer waits for inbound budget; a
    /// read cancelled during that wait (several times) loses nothing: once
    /// the budget is released the message arrives whole.
    #[compio::test]
    async fn a_read_cancelled_while_waiting_for_budget_loses_nothing() {
        use bus_core::{
            DecodeLimits, InboundBudget, ReadSettings,
            transport::{Connection as _, FrameReader as _, Listener as _},
        };
        use bus_tests::transport::TestTransport as _;
        const LEN: usize = 1 << 20;
        let mut listener = Ws::listen().await;
        let addr = listener.local_addr().expect("addr");
        let sender = compio::runtime::spawn(async move {
            let mut client = Ws::connect_unanswered(addr).await;
            client.send(&app(RECORD, 3, LEN - 256)).await;
            client
        });
        let incoming = within("accept", listener.accept()).await.expect("accept");
        let budget = InboundBudget::new(2 * LEN as u64);
        let held = budget.try_reserve(budget.total()).expect("all of it");
        let limits = DecodeLimits {
            max_message_size_bytes: 4 << 20,
            require_sealed: false,
        };
        let settings = ReadSettings::new(limits).budget(budget.clone());
        let (mut reader, _writer, _) = within("handshake", incoming.establish(settings))
            .await
            .expect("handshake");
        for _ in 0..5 {
            let read = reader.read_frame();
            let waited =
                compio::runtime::time::timeout(std::time::Duration::from_millis(50), read).await;
            assert!(
                waited.is_err(),
                "no frame while the budget is held: {waited:?}"
            );
        }
        drop(held);
        let frame = within("the frame", reader.read_frame())
            .await
            .expect("whole");
        assert_eq!(frame.header().request(), 3);
        assert_pattern(frame.body(), 3, LEN - 256);
        let _client = within("sender", sender).await.expect("sent");
    }
}
