//! The relay as a service (issue 18 item 4): systemd notification with a fake
//! `NOTIFY_SOCKET`, the drain on SIGTERM, `--pid-file` and `--env-file`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    Connector, PROMPTLY, Poller, RelayBuilder, TempDir, add_tunnel, http_get, read_until,
    rpc_request, sample,
};

#[test]
fn sd_notify_reports_ready_watchdog_and_stopping() {
    let dir = TempDir::new("relay-notify");
    add_tunnel(&dir.tunnels_file(), "notified");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let mut relay = RelayBuilder::new(&dir.tunnels_file())
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        .env("WATCHDOG_USEC", "200000")
        .start();
    assert_eq!(read_until(&socket, "READY=1"), ["READY=1"], "READY=1 first");
    assert_eq!(read_until(&socket, "WATCHDOG=1"), ["WATCHDOG=1"]);
    assert_eq!(read_until(&socket, "WATCHDOG=1"), ["WATCHDOG=1"]);
    relay.process().send_sigterm();
    let last = read_until(&socket, "STOPPING=1");
    assert!(
        last.iter().all(|m| m == "WATCHDOG=1" || m == "STOPPING=1"),
        "{last:?}"
    );
    let status = relay
        .process()
        .wait_exit(PROMPTLY)
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_drains_held_requests_and_ends_long_polls_at_once() {
    let dir = TempDir::new("relay-drain");
    let tunnel = add_tunnel(&dir.tunnels_file(), "drained");
    let mut relay = RelayBuilder::new(&dir.tunnels_file())
        .option("--shutdown.drain-timeout", "20s")
        .option("--metrics-listen", "127.0.0.1:0")
        .start();
    let connector = Connector::new(&relay, &tunnel);
    let poller = Poller::new(&relay, &tunnel.id, &tunnel.runtime_key, "drain-1");
    poller.register_as_connected();
    let held = {
        let connector = connector.clone();
        thread::spawn(move || connector.post(&rpc_request(1, "tools/list", json!({}))))
    };
    let command = poller.take_one_command();
    let long_poll = {
        let poller = poller.clone();
        thread::spawn(move || poller.poll(1, 20_000))
    };
    // The poll is held once the relay's metrics count it.
    let metrics = format!("{}/metrics", relay.metrics_url());
    let deadline = Instant::now() + PROMPTLY;
    while sample(
        &http_get(&metrics, &[]).body,
        "mcp_tunnel_relay_long_polls_held{tunnel=\"drained\"}",
    ) != Some(1.0)
    {
        assert!(Instant::now() < deadline, "the long-poll is not held");
        thread::sleep(Duration::from_millis(25));
    }

    let sent = Instant::now();
    relay.process().send_sigterm();
    let ended = long_poll.join().unwrap();
    assert_eq!(ended.status, 204, "{ended:#?}");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
    assert!(relay.wait_for_log("draining: 1 connector request(s) held", PROMPTLY));
    // Not ready for new work, and says so.
    assert_eq!(
        http_get(&format!("{}/healthz", relay.base_url()), &[]).status,
        503
    );
    let refused = connector.post(&rpc_request(2, "ping", json!({})));
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code().as_deref(), Some("relay_draining"));
    // The held request is still answered, through the still-open listener.
    let answered = poller.answer_with_result(&command, json!({"tools": []}));
    assert_eq!(answered.status, 200, "{answered:#?}");
    let call = held.join().unwrap();
    assert_eq!(call.status, 200, "{call:#?}");
    let status = relay
        .process()
        .wait_exit(PROMPTLY)
        .expect("exits once drained");
    assert_eq!(status.code(), Some(0));
    assert!(relay.output().contains("drained"), "{}", relay.output());
}

#[test]
fn the_drain_ends_at_its_timeout() {
    let dir = TempDir::new("relay-drain-timeout");
    let tunnel = add_tunnel(&dir.tunnels_file(), "stuck");
    let mut relay = RelayBuilder::new(&dir.tunnels_file())
        .option("--drain-timeout", "1s")
        .start();
    let connector = Connector::new(&relay, &tunnel);
    let poller = Poller::new(&relay, &tunnel.id, &tunnel.runtime_key, "stuck-1");
    poller.register_as_connected();
    let _held = thread::spawn(move || connector.post(&rpc_request(1, "ping", json!({}))));
    let _never_answered = poller.take_one_command();
    let sent = Instant::now();
    relay.process().send_sigterm();
    let status = relay
        .process()
        .wait_exit(PROMPTLY)
        .expect("exits at the drain timeout");
    assert_eq!(status.code(), Some(0));
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "{:?}",
        sent.elapsed()
    );
    assert!(
        relay
            .output()
            .contains("drain timeout: 1 connector request(s) still held")
    );
}

#[test]
fn the_pid_file_admits_one_relay_and_the_env_file_configures_it() {
    let dir = TempDir::new("relay-pid");
    add_tunnel(&dir.tunnels_file(), "env-configured");
    let pid_file = dir.path().join("relay.pid");
    let env_file = dir.path().join("relay.env");
    std::fs::write(
        &env_file,
        "# as /etc/mcp-tunnel/relay.env\nRELAY_QUEUE_CAPACITY=7\nRELAY_METRICS_LISTEN=127.0.0.1:0\n",
    )
    .unwrap();
    let mut first = RelayBuilder::new(&dir.tunnels_file())
        .option("--pid-file", pid_file.to_str().unwrap())
        .option("--env-file", env_file.to_str().unwrap())
        .start();
    let text = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(text.trim(), first.pid().to_string());
    let metrics = http_get(&format!("{}/metrics", first.metrics_url()), &[]).body;
    let capacity = "mcp_tunnel_relay_queue_capacity{tunnel=\"env-configured\"}";
    assert_eq!(sample(&metrics, capacity), Some(7.0), "{metrics}");

    // A second copy with the same pid file exits 0 at once.
    let mut second = support::ClientBuilder::bare()
        .arg("relay")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--tunnels-file")
        .arg(dir.tunnels_file().to_str().unwrap())
        .arg("--pid-file")
        .arg(pid_file.to_str().unwrap())
        .spawn();
    let status = second.wait_exit(PROMPTLY).expect("the second copy exits");
    assert_eq!(status.code(), Some(0), "{}", second.stderr());

    first.process().send_sigterm();
    first.process().wait_exit(PROMPTLY).expect("exits");
    assert!(
        !pid_file.exists(),
        "the pid file is removed at a clean exit"
    );
}

/// `Max open files` of a process: (soft, hard).
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut words = line.split_whitespace().skip(3);
    (words.next().unwrap().into(), words.next().unwrap().into())
}

/// A relay started under a soft open-files limit below `--max-connections` raises it (one
/// descriptor per connection), and says how to fix a hard limit that is too low.
#[test]
fn the_relay_fits_its_open_files_limit_to_max_connections() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: no prlimit (util-linux)");
        return;
    }
    let dir = TempDir::new("relay-nofile");
    add_tunnel(&dir.tunnels_file(), "nofile");
    let relay = RelayBuilder::new(&dir.tunnels_file())
        .option("--max-connections", "3000")
        .start_wrapped(&["prlimit", "--nofile=512:8192", "--"]);
    assert_eq!(
        open_files_limit(relay.pid()),
        ("3256".into(), "8192".into())
    );
    assert!(
        !relay.output().contains("LimitNOFILE"),
        "{}",
        relay.output()
    );
    let mut low = RelayBuilder::new(&dir.tunnels_file())
        .option("--max-connections", "3000")
        .start_wrapped(&["prlimit", "--nofile=512:1024", "--"]);
    assert_eq!(open_files_limit(low.pid()), ("1024".into(), "1024".into()));
    let output = low.stop_and_collect_output();
    assert!(
        output.contains("limited to 1024 (hard limit)") && output.contains("LimitNOFILE="),
        "{output}"
    );
}
