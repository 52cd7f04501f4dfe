//! The `mcp-tunnel` command: subcommand dispatch and exit codes.
//!
//! Exit codes: 0 clean stop, 1 runtime failure, 2 configuration or usage error.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::process::ExitCode;

use mcp_tunnel::{client, config, logging};

const USAGE: &str = "\
mcp-tunnel: reach private MCP servers through outbound-only HTTPS

Usage: mcp-tunnel <COMMAND> [OPTIONS]

Commands:
  run        Poll the control plane and forward MCP requests to a private server
  help       Print this help
  version    Print the version

Run `mcp-tunnel <COMMAND> --help` for a command's options.
";

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.is_empty() {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    }
    let command = args.remove(0);
    match command.to_str().unwrap_or("") {
        "run" => run(args),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "version" | "-V" | "--version" => {
            println!("mcp-tunnel {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("mcp-tunnel: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<OsString>) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    match config::parse_run(args, &env) {
        Ok(config::Parsed::Help) => {
            print!("{}", config::run_help());
            ExitCode::SUCCESS
        }
        Ok(config::Parsed::Run(cfg)) => {
            logging::init(cfg.log_level);
            ExitCode::from(client::run(&cfg) as u8)
        }
        Err(e) => {
            eprintln!("mcp-tunnel: configuration error: {e}");
            ExitCode::from(2)
        }
    }
}
