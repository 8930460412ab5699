//! The kitchen binary: the service host runs [`pizza_kitchen::Kitchen`] (settings, telemetry,
//! serving until SIGTERM or Ctrl-C, flushing telemetry).

fn main() -> std::process::ExitCode {
    pizza_servicekit::host::main::<pizza_kitchen::Kitchen>()
}
