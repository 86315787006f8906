//! A private `redis-server` for tests and benchmarks: started on a free loopback port in a
//! temporary folder, never saving to disk unless asked, killed on drop. The
//! Redis on 6379 belongs to the machine's user and is never touched.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("RQM_REDIS_SERVER")
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from);
    match Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => path,
        _ => panic!(
            "no working redis-server at {}: install it (Debian: apt-get install -y redis-server) or set RQM_REDIS_SERVER to its path; these tests start their own server and do not skip",
            path.display()
        ),
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("a bound address").port()
}

impl RedisServer {
    /// Starts a server with `--save ""`, nothing appended to disk.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra arguments, such as `["--appendonly", "yes"]`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        let port = free_port();
        let child = spawn(port, dir.path(), &args);
        let mut server = RedisServer {
            child,
            port,
            dir,
            args,
        };
        // Another process may take the free port before the server binds it.
        for _ in 0..5 {
            match server.wait_ready() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => {
                    server.port = free_port();
                    server.child = spawn(server.port, server.dir.path(), &server.args);
                }
                Err(log) => panic!("redis-server did not start; its log:\n{log}"),
            }
        }
        panic!("redis-server found no free port in 5 tries");
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and
    /// folder, so that with `--appendonly yes` it reloads what it had.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port, self.dir.path(), &self.args);
        if let Err(log) = self.wait_ready() {
            panic!("redis-server did not restart; its log:\n{log}");
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the server answers PING; `Err` with its log if it exits
    /// or stays silent for 10 s.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).expect("a valid URL");
        loop {
            if let Ok(mut conn) = client.get_connection() {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut conn);
                if pong.is_ok() {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("(exited with {status})\n{}", self.log()));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("(no answer within 10 s)\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(port: u16, dir: &Path, extra: &[String]) -> Child {
    // Each start's log stands alone.
    let _ = std::fs::remove_file(dir.join("redis.log"));
    Command::new(binary())
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .args(["--logfile", "redis.log", "--daemonize", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
