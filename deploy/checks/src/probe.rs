//! A minimal HTTP/1.1 GET for container health checks: `pizza-probe http://127.0.0.1:8080/readyz`.
//!
//! The runtime images are Debian slim with one binary; installing curl for a health check would add
//! several megabytes of libraries and their security updates to every image. This is the part of curl
//! a health check uses: connect with a deadline, send one request, read the status line. Only plain
//! `http://` to an address the container can reach; anything else is refused rather than guessed.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a probe did not get a 2xx answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not `http://host:port/path`.
    #[error("not an http://host:port/path URL: {0}")]
    Url(String),
    /// Connecting, writing or reading failed, or timed out.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The answer does not start with an HTTP status line.
    #[error("not an HTTP answer: {0:?}")]
    Answer(String),
    /// The server answered with a status outside 200..=299.
    #[error("HTTP status {0}")]
    Status(u16),
}

/// `host:port` and the path of an `http://` URL (the port is required: health checks name it).
pub fn parse_url(url: &str) -> Result<(String, String), ProbeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ProbeError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(ProbeError::Url(url.to_owned()));
    }
    Ok((authority.to_owned(), path.to_owned()))
}

/// GETs `url` and returns the status code when it is 2xx. Every step (each address tried, the write,
/// the read) is bounded by `timeout`.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let (authority, path) = parse_url(url)?;
    let mut last = None;
    let mut stream = None;
    for addr in authority.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = match stream {
        Some(s) => s,
        None => {
            return Err(last
                .unwrap_or_else(|| std::io::Error::other(format!("{authority} resolves to no address")))
                .into());
        }
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: pizza-probe\r\nConnection: close\r\n\r\n"
    )?;
    // The status line fits in the first read of any real server; 64 bytes is plenty for it.
    let mut buf = [0u8; 64];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].contains(&b'\n') {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(ProbeError::Answer(head.clone()))?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(ProbeError::Status(status))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A one-shot server answering `response` and handing back the request line it received.
    fn serve_once(response: &'static str) -> (String, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            reader.get_mut().write_all(response.as_bytes()).unwrap();
            request_line
        });
        (format!("http://{addr}/readyz"), handle)
    }

    #[test]
    fn a_2xx_answer_passes_and_the_request_is_a_get_of_the_path() {
        let (url, server) = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(probe(&url, Duration::from_secs(2)).unwrap(), 200);
        assert_eq!(server.join().unwrap(), "GET /readyz HTTP/1.1\r\n");
    }

    #[test]
    fn a_503_fails_with_its_status() {
        let (url, server) = serve_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let err = probe(&url, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, ProbeError::Status(503)), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn garbage_instead_of_http_fails() {
        let (url, server) = serve_once("SSH-2.0-OpenSSH\r\n");
        assert!(matches!(
            probe(&url, Duration::from_secs(2)),
            Err(ProbeError::Answer(_))
        ));
        server.join().unwrap();
    }

    #[test]
    fn nothing_listening_fails_fast() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = probe(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, ProbeError::Io(_)), "{err}");
    }

    #[test]
    fn only_http_urls_with_a_port_are_accepted() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/readyz").unwrap(),
            ("127.0.0.1:8080".to_owned(), "/readyz".to_owned())
        );
        assert_eq!(parse_url("http://kitchen:8081").unwrap().1, "/");
        for bad in [
            "https://x:1/",
            "http://x/readyz",
            "http://:80/",
            "127.0.0.1:8080/readyz",
            "http://x:port/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
