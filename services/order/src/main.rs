//! The order service binary: the service host runs [`pizza_order::OrderService`] (settings,
//! telemetry before the workflow engine, serving until SIGTERM or Ctrl-C, flushing telemetry).

fn main() -> std::process::ExitCode {
    pizza_servicekit::host::main::<pizza_order::OrderService>()
}
