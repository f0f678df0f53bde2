//! The official Python client (`pip install kubernetes`) through Berth.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_client_creates_lists_patches_and_watches() {
    let c = common::Cluster::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let kubeconfig = c.kubeconfig();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(kubeconfig)
            .output()
            .expect("python3 is installed")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'kubernetes'"),
        "the Python client is missing: pip install kubernetes"
    );
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    c.stop().await;
}
