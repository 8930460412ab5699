//! `pizza-probe URL [TIMEOUT_SECONDS]`: exit 0 when a GET of URL answers 2xx within the timeout
//! (default 3 s), else print why on stderr and exit 1. The containers' health check; see
//! `pizza_deploy_checks::probe`.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), timeout) = (args.next(), args.next()) else {
        eprintln!("usage: pizza-probe http://HOST:PORT/PATH [TIMEOUT_SECONDS]");
        return ExitCode::from(2);
    };
    let timeout = match timeout.map(|t| t.parse::<f64>()) {
        None => Duration::from_secs(3),
        Some(Ok(t)) if t > 0.0 && t <= 300.0 => Duration::from_secs_f64(t),
        Some(_) => {
            eprintln!("pizza-probe: the timeout must be a number of seconds above 0 and at most 300");
            return ExitCode::from(2);
        }
    };
    match pizza_deploy_checks::probe::probe(&url, timeout) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pizza-probe: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
