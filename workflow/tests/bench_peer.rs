//! The engine benchmark's DBOS peer (`benches/dbos/peer.py`) must reach the server the engine is
//! measured on, whatever form its URL takes. The native stack hands out a Unix socket URL (the
//! socket's directory percent-encoded as the host), which SQLAlchemy, under DBOS, tried to resolve
//! as a host name: `make bench` with that URL in `DATABASE_URL` printed "DBOS Transact peer: not
//! measured". The peer rewrites such a URL into SQLAlchemy's form; its self-test checks the
//! rewriting without DBOS installed, and this runs it.

use std::process::Command;

#[test]
fn the_dbos_peer_reads_a_unix_socket_url() {
    let peer = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/dbos/peer.py");
    let out = Command::new("python3")
        .arg(peer)
        .arg("--self-test")
        .output()
        .expect("python3 runs (the test tools need it too)");
    assert!(
        out.status.success(),
        "{peer} --self-test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
