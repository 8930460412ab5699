//! The delivery binary: the service host runs [`pizza_delivery::Delivery`] (settings, telemetry,
//! serving until SIGTERM or Ctrl-C, flushing telemetry).

fn main() -> std::process::ExitCode {
    pizza_servicekit::host::main::<pizza_delivery::Delivery>()
}
