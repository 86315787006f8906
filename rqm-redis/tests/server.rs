//! The test server guard and the server check, against a real redis-server.

use rqm_redis::testing::RedisServer;
use rqm_redis::{Config, Error, check_server};

#[tokio::test]
async fn a_server_that_may_evict_keys_is_refused() {
    let server = RedisServer::start();
    let config = Config {
        url: server.url(),
        ..Config::default()
    };
    let client = config.client().unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    check_server(&mut conn, &config)
        .await
        .expect("noeviction is the default");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = check_server(&mut conn, &config).await.unwrap_err();
    assert!(
        matches!(&err, Error::Eviction { policy, .. } if policy == "allkeys-lru"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("maxmemory-policy noeviction") && text.contains(&server.url()),
        "{text}"
    );
}

#[tokio::test]
async fn a_restarted_append_only_server_keeps_its_data() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    server.restart();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let v: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "v", "log: {}", server.log());
}

#[test]
fn servers_are_private_and_gone_after_drop() {
    let server = RedisServer::start();
    assert_ne!(server.port(), 6379);
    let url = server.url();
    drop(server);
    let client = redis::Client::open(url).unwrap();
    assert!(
        client.get_connection().is_err(),
        "the server outlived its guard"
    );
}
