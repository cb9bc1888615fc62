//! Writes the seed corpora of the fuzz targets (fuzz/, `cargo xtask fuzz`)
//! into `fuzz/corpus/<target>/` (git-ignored), and checks that each seed
//! means what it is meant to: valid seeds pass the real parser, hostile
//! ones are refused with the error they were built for.

use std::{fs, path::PathBuf};

use bus_core::{Command, DecodeLimits, Decoder, FrameError, FrameMut};
use bus_replica::{
    Binding, Dialer, HandshakeConfig, Key, Keys, NonceError, NonceSource, PeerSet,
    message::{Challenge, Finish},
};

/// The corpus directory of one fuzz target, created empty of seeds.
fn corpus(target: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    fs::write(corpus(target).join(format!("seed-{name}")), bytes).expect("write a seed");
}

/// A sealed frame of `command` with `body`; `unsealed` leaves checksums 0.
fn frame(command: u8, body: &[u8], unsealed: bool) -> Vec<u8> {
    let mut frame = FrameMut::with_body(Command::from_u8(command), body);
    frame.header_mut().set_request(7);
    if !unsealed {
        frame.seal();
    }
    frame.as_bytes().to_vec()
}

/// The decoder target's 4-byte prefix (fuzz/src/lib.rs `DecoderInput`):
/// flags, `max_message_size` = 256 + 4 × u16, chunking.
fn decoder_input(flags: u8, max: u32, chunking: u8, stream: &[u8]) -> Vec<u8> {
    let units = u16::try_from((max - 256) / 4).expect("max in range");
    let mut out = vec![flags];
    out.extend_from_slice(&units.to_le_bytes());
    out.push(chunking);
    out.extend_from_slice(stream);
    out
}

fn decode_all(stream: &[u8], max: u32) -> (usize, Option<FrameError>) {
    let mut decoder = Decoder::new(DecodeLimits {
        max_message_size_bytes: max,
        require_sealed: false,
    });
    let mut input = stream;
    let mut count = 0;
    loop {
        match decoder.decode(&mut input) {
            Ok(Some(_)) => count += 1,
            Ok(None) if input.is_empty() => return (count, None),
            Ok(None) => {}
            Err(err) => return (count, Some(err)),
        }
    }
}

#[test]
fn decoder_header_and_ws_seeds() {
    let ping = frame(1, b"", false);
    let app = frame(16, &[0xAB; 700], false);
    let plain = frame(200, b"hello", true);
    let mut stream = [ping.clone(), app.clone(), plain.clone()].concat();
    assert_eq!(decode_all(&stream, 4096), (3, None));
    write(
        "decoder",
        "three-frames",
        &decoder_input(0, 4096, 3, &stream),
    );
    write(
        "decoder",
        "three-frames-resealed",
        &decoder_input(0b10, 4096, 9, &stream),
    );
    write(
        "decoder",
        "large-frame",
        &decoder_input(0b0010, 1024, 12, &app),
    );
    let mut bad_checksum = app.clone();
    bad_checksum[300] ^= 1;
    assert_eq!(
        decode_all(&bad_checksum, 4096),
        (0, Some(FrameError::BodyChecksum))
    );
    write(
        "decoder",
        "bad-body-checksum",
        &decoder_input(0, 4096, 5, &bad_checksum),
    );
    let mut oversize = ping.clone();
    oversize[48..52].copy_from_slice(&(1u32 << 30).to_le_bytes());
    assert!(matches!(
        decode_all(&oversize, 4096),
        (0, Some(FrameError::TooLarge { .. }))
    ));
    write("decoder", "oversize", &decoder_input(0, 4096, 1, &oversize));
    let mut bad_magic = ping.clone();
    bad_magic[62] = 9;
    write(
        "decoder",
        "bad-protocol",
        &decoder_input(0b100, 4096, 2, &bad_magic),
    );
    write(
        "decoder",
        "unsealed-required",
        &decoder_input(1, 4096, 2, &plain),
    );
    stream.truncate(stream.len() - 3);
    write(
        "decoder",
        "truncated",
        &decoder_input(0b1100, 4096, 7, &stream),
    );

    // header: flags, max (u32 LE), 256 bytes.
    for (name, bytes, flags) in [
        ("ping", &ping, 0u8),
        ("plain", &plain, 1),
        ("bad", &bad_magic, 2),
    ] {
        let mut input = vec![flags];
        input.extend_from_slice(&(64u32 << 20).to_le_bytes());
        input.extend_from_slice(&bytes[..256]);
        write("header", name, &input);
    }

    // ws_message: flags, max (256 + 4 × u16), the message.
    let limits = DecodeLimits {
        max_message_size_bytes: 4096,
        require_sealed: false,
    };
    assert!(limits.check_message(&app).is_ok());
    assert!(matches!(
        limits.check_message(&app[..500]),
        Err(FrameError::MessageLength { .. })
    ));
    for (name, message) in [
        ("app", &app[..]),
        ("short", &app[..500]),
        ("ping", &ping[..]),
    ] {
        let mut input = vec![0, 0x80, 0x03];
        input.extend_from_slice(message);
        write("ws_message", name, &input);
    }
}

#[test]
fn config_and_admin_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let defaults = fs::read(dir.join("crates/bus-config/defaults.toml")).expect("defaults.toml");
    assert!(defaults.starts_with(b"#") || defaults.starts_with(b"["));
    write("config", "defaults", &defaults);
    for node in 0..3 {
        let path = dir.join(format!("examples/cluster/node{node}.toml"));
        write(
            "config",
            &format!("cluster-node{node}"),
            &fs::read(path).expect("example config"),
        );
    }
    write(
        "config",
        "small",
        b"[bus]\nmax_message_size = \"1 MiB\"\nidle_timeout = \"30s\"\n",
    );
    for (name, request) in [
        (
            "metrics",
            &b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        ),
        ("head", b"HEAD /healthz?x=1 HTTP/1.0\r\n\r\n"),
        ("post", b"POST /connz HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("partial", b"GET /stats HTTP/1.1\r\nHost: x\r\n"),
    ] {
        write("admin_request", name, request);
    }
}

struct Fixed;

impl NonceSource for Fixed {
    fn nonce(&mut self) -> Result<[u8; 32], NonceError> {
        Ok([0x5A; 32])
    }
}

#[test]
fn replica_handshake_seeds() {
    // Input: flags, Hello (u16 LE length + bytes), Finish (same), Challenge.
    let keys = Keys::new(Key::derive(b"fuzz psk"));
    let peers: PeerSet = [0, 1, 2, 7].into_iter().collect();
    let config = HandshakeConfig::new(0x0123_4567_89ab_cdef_0011_2233_4455_6677, 2, peers, keys);
    let (_dialer, hello) = Dialer::start(&config, 5, Binding::PLAIN_TCP, &mut Fixed).unwrap();
    let finish = Finish {
        cluster: config.cluster,
        replica: 2,
        mac_d: [0; 32],
    }
    .encode();
    let challenge = Challenge::accept(config.cluster, 5, [0xA5; 32], [0; 32]).encode();
    let piece = |bytes: &[u8]| {
        let mut out = u16::try_from(bytes.len()).unwrap().to_le_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    };
    for flags in [0u8, 3] {
        let mut input = vec![flags];
        input.extend(piece(hello.as_bytes()));
        input.extend(piece(finish.as_bytes()));
        input.extend_from_slice(challenge.as_bytes());
        write("replica_handshake", &format!("honest-{flags}"), &input);
    }
    assert_eq!(hello.header().validate(u32::MAX), Ok(()));
}
