//! The Redis engine across processes: the conformance cases with three
//! `rqm-worker run` processes; workers killed with SIGKILL mid-project; and
//! Redis itself killed and restarted mid-project with `appendonly yes`.
//! Each test starts its own redis-server.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rqm_core::testing::conformance;
use rqm_core::{Node, Project, Report};
use rqm_redis::redis;
use rqm_redis::testing::RedisServer;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_rqm-worker");

/// Worker processes, killed when dropped.
struct Workers {
    url: String,
    extra: Vec<String>,
    children: Vec<Child>,
}

impl Workers {
    fn start(url: &str, n: usize) -> Workers {
        Workers::start_with(url, n, &[])
    }

    fn start_with(url: &str, n: usize, extra: &[&str]) -> Workers {
        let mut workers = Workers {
            url: url.to_owned(),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            children: Vec::new(),
        };
        for _ in 0..n {
            workers.add();
        }
        workers
    }

    fn add(&mut self) {
        let child = Command::new(BIN)
            .args([
                "run",
                "--redis",
                &self.url,
                "--lease-ms",
                "600",
                "--concurrency",
                "16",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("a worker starts");
        self.children.push(child);
    }

    /// Kills one worker with SIGKILL, as a crash would.
    fn kill_one(&mut self) {
        let mut child = self.children.remove(0);
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the command with `args`, then the path of a file holding `project`.
fn on_project(args: &[&str], project: &[u8]) -> std::process::Output {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), project).unwrap();
    Command::new(BIN)
        .args(args)
        .arg(file.path())
        .output()
        .expect("rqm-worker runs")
}

fn submit(url: &str, project: &[u8], timeout_s: u32) -> (Option<i32>, Report, String) {
    submit_with(url, project, timeout_s, &[])
}

fn submit_with(
    url: &str,
    project: &[u8],
    timeout_s: u32,
    extra: &[&str],
) -> (Option<i32>, Report, String) {
    let timeout = timeout_s.to_string();
    let mut args = vec![
        "submit",
        "--redis",
        url,
        "--wait",
        "--json",
        "--timeout",
        &timeout,
    ];
    args.extend_from_slice(extra);
    let out = on_project(&args, project);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no report ({e}): {stdout}\n{stderr}"));
    (out.status.code(), report, stderr)
}

#[test]
fn every_case_on_three_worker_processes() {
    let server = RedisServer::start();
    let _workers = Workers::start(&server.url(), 3);
    let dir = conformance::dir(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    for (name, case) in conformance::load(&dir) {
        let (code, report, stderr) = submit(&server.url(), &case.project_json(), 30);
        let outcome = if case.status == "rejected" {
            if code == Some(2) && report.status == "rejected" {
                conformance::check_rejection(&case, report.error.as_deref().unwrap_or_default())
            } else {
                Err(format!("exit {code:?}, status {}; {stderr}", report.status))
            }
        } else {
            conformance::check_report(&case, &report, 40_000)
        };
        if let Err(e) = outcome {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nredis log:\n{}",
        failures.join("\n"),
        server.log()
    );
}

fn wide(jobs: usize, ms: u64) -> Project {
    Project::new(vec![
        Node::group(
            (0..jobs)
                .map(|_| Node::call("sleep_ms", json!(ms)))
                .collect(),
        ),
        Node::after("sum"),
    ])
}

/// How many times each node's completion was applied, from the events.
fn finished_counts(url: &str, id: &str) -> HashMap<u32, usize> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(format!("rqm:{{{id}}}:ev"))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    let mut counts = HashMap::new();
    for (_, fields) in entries {
        for change in fields.get("c").into_iter().flat_map(|c| c.split(' ')) {
            // `finished:<n>`, or `finished:<first>-<last>` for a run.
            if let Some(nodes) = change.strip_prefix("finished:") {
                let (first, last) = nodes.split_once('-').unwrap_or((nodes, nodes));
                for node in first.parse::<u32>().unwrap()..=last.parse().unwrap() {
                    *counts.entry(node).or_default() += 1;
                }
            }
        }
    }
    counts
}

#[test]
fn workers_killed_mid_run_lose_nothing() {
    let server = RedisServer::start();
    let mut workers = Workers::start(&server.url(), 3);
    let project = serde_json::to_vec(&wide(2_000, 30)).unwrap();
    let url = server.url();
    let submitter = std::thread::spawn(move || submit(&url, &project, 120));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        workers.kill_one();
        workers.add();
    }
    let (code, report, stderr) = submitter.join().unwrap();
    assert_eq!(
        code,
        Some(0),
        "{stderr}\n{:?}\nlog:\n{}",
        report.counts,
        server.log()
    );
    assert_eq!(report.status, "finished");
    let result = report.result.unwrap();
    assert_eq!(
        result[1],
        json!(60_000),
        "every sleep counted once in the sum"
    );
    assert_eq!(result[0].as_array().unwrap().len(), 2_000);
    let id = stderr.split_whitespace().nth(1).unwrap().to_owned();
    let counts = finished_counts(&server.url(), &id);
    assert_eq!(
        counts.len(),
        2_000 + 1,
        "every job finished: the group's 2,000 and the sum"
    );
    assert!(
        counts.values().all(|&c| c == 1),
        "a completion was applied twice"
    );
    let reran = report.nodes.iter().filter(|n| n.attempts > 1).count();
    assert!(reran > 0, "no job was running when its worker was killed");
}

#[test]
fn a_restarted_redis_loses_no_project() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let _workers = Workers::start(&server.url(), 3);
    let project = serde_json::to_vec(&wide(300, 20)).unwrap();
    let url = server.url();
    let submitter = std::thread::spawn(move || submit(&url, &project, 120));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    server.restart();
    eprintln!("redis restarted in {:?}", t.elapsed());
    let (code, report, stderr) = submitter.join().unwrap();
    assert_eq!(
        code,
        Some(0),
        "{stderr}\n{:?}\nlog:\n{}",
        report.counts,
        server.log()
    );
    let result: Value = report.result.unwrap();
    assert_eq!(result[1], json!(6_000));
}

#[test]
fn an_acl_user_with_a_password_runs_projects() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "rqmworker",
            "on",
            ">s3cret",
            "~rqm:*",
            "&rqm:*",
            "+@all",
        ])
        .query(&mut conn)
        .unwrap();
    let url = format!("redis://rqmworker:s3cret@127.0.0.1:{}", server.port());
    let _workers = Workers::start(&url, 1);
    let project = br#"{"jobs": [{"func": "simpleTask", "args": 4}]}"#;
    let (code, report, stderr) = submit(&url, project, 30);
    assert_eq!(
        (code, report.result),
        (Some(0), Some(json!([8]))),
        "{stderr}"
    );
    let wrong = format!("redis://rqmworker:nope@127.0.0.1:{}", server.port());
    let out = on_project(&["submit", "--redis", &wrong], project);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("authentication failed"),
        "{stderr}"
    );
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_lets_running_jobs_finish_or_hands_them_back() {
    let server = RedisServer::start();
    let url = server.url();
    // A patient worker: its running job finishes within the grace period.
    let mut patient = Command::new(BIN)
        .args(["run", "--redis", &url, "--grace-s", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let project = br#"{"jobs": [{"func": "sleep_ms", "args": 800}]}"#.to_vec();
    let submitter = {
        let url = url.clone();
        let project = project.clone();
        std::thread::spawn(move || submit(&url, &project, 60))
    };
    std::thread::sleep(Duration::from_millis(300));
    signal(&patient, "-TERM");
    let status = patient.wait().unwrap();
    assert!(status.success(), "the worker exits cleanly: {status}");
    let (code, report, stderr) = submitter.join().unwrap();
    assert_eq!(
        (code, report.node("0").map(|n| n.attempts)),
        (Some(0), Some(1)),
        "{stderr}"
    );

    // An impatient one: the job outlasts the grace period, so its lease is
    // handed back and another worker runs it again.
    let mut impatient = Command::new(BIN)
        .args([
            "run",
            "--redis",
            &url,
            "--grace-s",
            "0.1",
            "--lease-ms",
            "600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let submitter = {
        let url = url.clone();
        std::thread::spawn(move || submit(&url, &project, 60))
    };
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    signal(&impatient, "-INT");
    assert!(impatient.wait().unwrap().success());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the grace period was kept: {:?}",
        t.elapsed()
    );
    let _rescuer = Workers::start(&url, 1);
    let (code, report, stderr) = submitter.join().unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        report.node("0").map(|n| n.attempts),
        Some(2),
        "the handed-back job ran again"
    );
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (Debian: apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rediss_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=rqm test CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let tls_port = rqm_redis::testing::free_port().to_string();
    let path = |f: &str| d.join(f).to_string_lossy().into_owned();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &path("server.crt"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let ca = path("ca.crt");
    let _workers = Workers::start_with(&url, 1, &["--tls-ca", &ca]);
    let project = br#"{"jobs": [{"func": "simpleTask", "args": 5}]}"#;
    let (code, report, stderr) = submit_with(&url, project, 30, &["--tls-ca", &ca]);
    assert_eq!(
        (code, report.result),
        (Some(0), Some(json!([10]))),
        "{stderr}\nlog:\n{}",
        server.log()
    );
    // Without the CA, the server's certificate is not trusted.
    let out = on_project(&["submit", "--redis", &url], project);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_job_that_keeps_killing_its_workers_is_given_up() {
    let server = RedisServer::start();
    let mut workers = Workers::start(&server.url(), 1);
    let url = server.url();
    let submitter = std::thread::spawn(move || {
        submit(&url, br#"{"jobs": [{"func": "exit_worker", "args": 3, "blocking": true}, {"func": "simpleTask", "args": 1}]}"#, 60)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !submitter.is_finished() && Instant::now() < deadline {
        if let Ok(Some(_)) = workers.children[0].try_wait() {
            let mut dead = workers.children.remove(0);
            let _ = dead.wait();
            workers.add();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, report, stderr) = submitter.join().unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report.failed_path.as_deref(), Some("0"));
    let error = report.error.clone().unwrap_or_default();
    assert!(
        error.contains("lost 4 times") && error.contains("given up after 3 recoveries"),
        "{error}"
    );
    assert_eq!(
        report.node("1").and_then(|n| n.started_us),
        None,
        "nothing after the barrier started"
    );
}

#[test]
fn jobs_go_to_their_named_queues() {
    let server = RedisServer::start();
    let url = server.url();
    let _default = Workers::start(&url, 1);
    let project = br#"{"jobs": [{"func": "simpleTask", "args": 1}, {"func": "simpleTask", "args": 2, "queue": "slow"}]}"#;
    let out = on_project(&["submit", "--redis", &url], project);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::thread::sleep(Duration::from_millis(400));
    let status = |id: &str| -> Report {
        let out = Command::new(BIN)
            .args(["status", id, "--json", "--redis", &url])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = status(&id);
    assert_eq!(report.node("0").unwrap().state, "finished");
    assert_eq!(
        report.node("1").unwrap().state,
        "ready",
        "no worker takes the slow queue yet"
    );
    let _slow = Workers::start_with(&url, 1, &["--queues", "slow"]);
    let out = Command::new(BIN)
        .args(["wait", &id, "--json", "--timeout", "20", "--redis", &url])
        .output()
        .unwrap();
    let report: Report =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report.result, Some(json!([2, 4])));
}

#[test]
fn a_worker_refuses_a_redis_that_may_evict_keys() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let out = Command::new(BIN)
        .args(["run", "--redis", &server.url()])
        .output()
        .expect("the worker runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("maxmemory-policy `allkeys-lru`") && stderr.contains("noeviction"),
        "{stderr}"
    );
}
