//! On cgroup v2 a container's init is born in its cgroup (`clone3` with
//! `CLONE_INTO_CGROUP`) instead of being moved there. This host is hybrid, but its cgroup2
//! mount at `/sys/fs/cgroup/unified` is a real v2 hierarchy (no controllers), enough to check
//! the placement. Root test; it removes what it makes.

mod support;

use std::path::Path;

use berth_runtime::cgroups::{self, Cgroups, Cgroupv2};
use berth_runtime::container::{self, CreateOptions, Root, StartMode};

const UNIFIED: &str = "/sys/fs/cgroup/unified";

fn create(root: &Root, id: &str, bundle: &Path, cg: &dyn Cgroups, cgroup: &str) -> i32 {
    let mut spec = container::load_spec(bundle).unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(cgroup.into()));
    spec.set_linux(Some(linux));
    let created = container::create(CreateOptions {
        root,
        id,
        bundle,
        spec,
        rootfs: None,
        cgroups: cg,
        mode: StartMode::OnStart,
        stdio: None,
        annotations: Default::default(),
    })
    .unwrap();
    created.pid
}

#[test]
fn the_init_is_born_in_its_v2_cgroup() {
    if !cgroups::is_cgroup2_mount(Path::new(UNIFIED)).unwrap_or(false)
        && !cgroups::is_cgroup2_mount(Path::new("/sys/fs/cgroup")).unwrap_or(false)
    {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped: no cgroup2 hierarchy on this host");
        }
        return;
    }
    let base = if cgroups::is_cgroup2_mount(Path::new("/sys/fs/cgroup")).unwrap() {
        "/sys/fs/cgroup"
    } else {
        UNIFIED
    };
    let bundle = support::images().join("bundle-busybox");
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path()).unwrap();
    let v2 = Cgroupv2::new(base.into());
    let parent = format!("berth-test-{}-v2clone", std::process::id());
    for i in 0..10 {
        let id = format!("c{i}");
        let path = format!("{parent}/{id}");
        let pid = create(&root, &id, &bundle, &v2, &path);
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let line = own.lines().find(|l| l.starts_with("0::")).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_eq!(line, format!("0::/{path}"), "init is not in its cgroup");
            assert_eq!(v2.procs(&path).unwrap(), vec![pid]);
        }));
        container::delete(&root, &id, true, &v2).unwrap();
        if let Err(p) = result {
            let _ = v2.remove(&parent);
            std::panic::resume_unwind(p);
        }
    }
    v2.remove(&parent).unwrap();
    assert!(!Path::new(base).join(&parent).exists());
}
