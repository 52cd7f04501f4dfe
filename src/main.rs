//! The `mcp-tunnel` command: subcommand dispatch and exit codes.
//!
//! Exit codes: 0 clean stop, 1 runtime failure, 2 configuration or usage error, 3 key rejected
//! (with `--exit-on-auth-failure`), 70 internal error (see `contain`).

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::process::ExitCode;

use mcp_tunnel::{client, config, demo, logging, relay, stub};

const USAGE: &str = "\
mcp-tunnel: reach private MCP servers through outbound-only HTTPS

Usage: mcp-tunnel <COMMAND> [OPTIONS]

Commands:
  run        Poll the control plane and forward MCP requests to a private server
  relay      Self-hosted control plane and public MCP endpoint (and `relay tunnel ...`)
  stub       A small built-in MCP server for demos and smoke tests
  demo       Relay, client and stub in one process, with one real MCP session through them
  doctor     Check the configuration `run` would use: DNS, TCP, proxy, TLS, API key, MCP servers
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
    // Before any thread starts: a panic is reported without quoting data (see `contain`).
    mcp_tunnel::contain::report_panics();
    match command.to_str().unwrap_or("") {
        "run" => run(args),
        "relay" => exit_code(relay::main(args)),
        "stub" => exit_code(stub::main(args)),
        "demo" => exit_code(demo::main(args)),
        "doctor" => exit_code(mcp_tunnel::doctor::main(args)),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "version" | "-V" | "--version" => {
            println!("{}", mcp_tunnel::build::version_line());
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
            logging::init(&cfg.log);
            exit_code(client::run(&cfg))
        }
        Err(e) => {
            eprintln!("mcp-tunnel: configuration error: {e}");
            ExitCode::from(2)
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
