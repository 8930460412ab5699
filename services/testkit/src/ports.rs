//! Ports for processes a test starts and that bind their own listeners (the shop's services, a
//! private Collector, a private broker).
//!
//! Such a port is chosen here and bound by the child a moment later, or again after the child is
//! killed and restarted on it. `bind("127.0.0.1:0")` would hand out a port of the kernel's
//! *ephemeral* range, the range every outgoing connection on the machine takes its local port from:
//! with three shops, their brokers and Collectors side by side, some client's connection took such
//! a port in the gap and the service that was to listen on it failed with "Address already in use"
//! (the trace-integrity matrix, once in a CI run). So the ports come from below that range, where
//! no outgoing connection lands unless it binds one on purpose, and each is handed out once per
//! process.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Where the search starts when the kernel's range cannot be read or starts very low: above the
/// well-known and registered ports the native stack and the usual tools listen on (4317, 5432,
/// 8080, 9092, 13133, 16686, ...).
const LOWEST: u16 = 20_000;
/// The kernel's default start of the ephemeral range, if `/proc` does not say.
const DEFAULT_EPHEMERAL_START: u16 = 32_768;

/// Ports this process handed out already: a second test in the same binary never gets one of
/// them, even after the first one's child stopped and the port is free again.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 that is free now, below the kernel's ephemeral range, and never handed out
/// before by this process.
pub fn free_port() -> std::io::Result<u16> {
    let (low, high) = candidates();
    let span = u32::from(high - low);
    // A different starting point in each process, so test binaries run side by side seldom probe
    // the same ports in the same order.
    let start = (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u32;
    let mut handed_out = HANDED_OUT.lock().expect("port registry lock");
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for step in 0..span {
        let port = low + ((start + step) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port on 127.0.0.1 in {low}..{high}"),
    ))
}

/// The range searched: from [`LOWEST`] up to the start of the ephemeral range.
fn candidates() -> (u16, u16) {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| ephemeral_start(&text))
        .unwrap_or(DEFAULT_EPHEMERAL_START);
    range_below(ephemeral_start)
}

fn ephemeral_start(text: &str) -> Option<u16> {
    text.split_whitespace().next()?.parse().ok()
}

/// `LOWEST..start`, or, when the ephemeral range starts below `LOWEST + 1000` (a machine tuned for
/// many outgoing connections), the thousand ports above `1024` and under it.
fn range_below(start: u16) -> (u16, u16) {
    if start >= LOWEST + 1_000 {
        (LOWEST, start)
    } else {
        (1_024.max(start.saturating_sub(1_000)), start.max(1_025))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_never_twice() {
        let (low, high) = candidates();
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice: {ports:?}");
        for port in ports {
            assert!((low..high).contains(&port), "{port} outside {low}..{high}");
            TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        }
    }

    #[test]
    fn the_range_ends_where_the_kernel_starts_handing_out_ports() {
        assert_eq!(ephemeral_start("32768\t60999\n"), Some(32_768));
        assert_eq!(ephemeral_start(""), None);
        assert_eq!(range_below(32_768), (LOWEST, 32_768));
        assert_eq!(range_below(10_000), (9_000, 10_000));
        assert_eq!(range_below(1_024), (1_024, 1_025));
    }
}
