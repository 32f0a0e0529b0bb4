//! Root file system images: Debian's own dynamically linked programs (python3, gcc, make,
//! perl, coreutils) run from an image by path, with the session's scratch directory layered
//! over it; what they print is compared with the same program run natively on this Debian
//! machine.

mod support;

use std::process::Command;
use support::*;
use tonic::{Code, Request};
use xeno_schemas::proto::common::v1::TaskState;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::TaskManager;

/// Runs `script` with the image's `/bin/sh` in a fresh domain over the test image.
async fn sh(
    manager: &xeno_taskmgr_vm::VmTaskManager,
    domain: &str,
    task: &str,
    script: &str,
) -> Finished {
    let guest = Guest::at_path("/bin/sh", &["-c", script])
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp");
    run(manager, domain, task, &guest).await
}

fn exited(done: &Finished) -> String {
    assert_eq!(
        done.state(),
        TaskState::Exited,
        "stdout {:?} stderr {:?} exit {:?}",
        done.stdout_text(),
        String::from_utf8_lossy(&done.stderr),
        done.exit
    );
    done.stdout_text()
}

/// The same command run natively (Debian's own programs on this machine).
fn native_sh(script: &str) -> String {
    let output = Command::new("/bin/sh")
        .args(["-c", script])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("native sh");
    assert!(output.status.success(), "native: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const PYTHON_HASH_JSON: &str = "import hashlib, json\n\
    print(hashlib.sha256(b'xenoserver' * 1000).hexdigest())\n\
    doc = {'a': [1, 2.5, None, True], 'b': {'c': 'd\\u00e9'}}\n\
    text = json.dumps(doc, sort_keys=True)\n\
    print(text, json.loads(text) == doc)\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python3_from_the_image_hashes_and_round_trips_json_as_natively() {
    let Some(manager) = image_manager() else {
        return;
    };
    let domain = create_with_image(&manager, limits(0, 256)).await;
    let guest = Guest::at_path("/usr/bin/python3", &["-c", PYTHON_HASH_JSON]);
    let done = run(&manager, &domain, "py", &guest).await;
    let native = Command::new("python3")
        .args(["-c", PYTHON_HASH_JSON])
        .output()
        .expect("native python3");
    assert_eq!(exited(&done), String::from_utf8_lossy(&native.stdout));
    assert!(done.stdout_text().ends_with("True\n"));
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python3_subprocess_runs_the_images_ls() {
    let Some(manager) = image_manager() else {
        return;
    };
    let domain = create_with_image(&manager, limits(0, 256)).await;
    let code = "import subprocess\n\
        r = subprocess.run(['ls', '-l', '/usr/bin/python3'], capture_output=True, text=True)\n\
        print(r.returncode, r.stdout.split()[0], r.stdout.split()[-3:])\n\
        r = subprocess.run(['ls', '/usr/lib/python3.11/json'], capture_output=True, text=True)\n\
        print(r.stdout, end='')\n";
    let guest = Guest::at_path("/usr/bin/python3", &["-c", code]);
    let done = run(&manager, &domain, "sub", &guest).await;
    // Natively, python3's installation compiled the modules into __pycache__; the image's
    // maintainer scripts never ran.
    let listing: String = native_sh("ls /usr/lib/python3.11/json")
        .lines()
        .filter(|name| *name != "__pycache__")
        .map(|name| format!("{name}\n"))
        .collect();
    assert_eq!(
        exited(&done),
        format!("0 lrwxrwxrwx ['/usr/bin/python3', '->', 'python3.11']\n{listing}")
    );
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcc_compiles_and_links_hello_and_make_builds_a_project_with_two_jobs() {
    let Some(manager) = image_manager() else {
        return;
    };
    let domain = create_with_image(&manager, limits(0, 512)).await;
    let hello = "cd /tmp && printf '#include <stdio.h>\\nint main(void) { printf(\"hello, world\\\\n\"); return 0; }\\n' > hello.c \
        && gcc hello.c -o hello && ./hello";
    assert_eq!(
        exited(&sh(&manager, &domain, "gcc", hello).await),
        "hello, world\n"
    );
    let project = "mkdir -p /src/calc && cd /src/calc \
        && printf 'int add(int, int);\\nint mul(int, int);\\n' > ops.h \
        && printf '#include \"ops.h\"\\nint add(int a, int b) { return a + b; }\\n' > add.c \
        && printf '#include \"ops.h\"\\nint mul(int a, int b) { return a * b; }\\n' > mul.c \
        && printf '#include <stdio.h>\\n#include \"ops.h\"\\nint main(void) { printf(\"%%d %%d\\\\n\", add(2, 3), mul(4, 5)); return 0; }\\n' > main.c \
        && printf 'calc: main.o add.o mul.o\\n\\tgcc -o $@ $^\\n%%.o: %%.c ops.h\\n\\tgcc -O2 -c $< -o $@\\n' > Makefile \
        && make -s -j2 && ./calc && ls *.o";
    assert_eq!(
        exited(&sh(&manager, &domain, "make", project).await),
        "5 20\nadd.o\nmain.o\nmul.o\n"
    );
    // The build's files landed in the session's scratch directory, not in the image.
    let image = test_images_dir()
        .join(test_image().expect("image").digest)
        .join("root");
    assert!(!image.join("src").exists() && !image.join("tmp/hello").exists());
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perl_and_coreutils_from_the_image_match_native() {
    let Some(manager) = image_manager() else {
        return;
    };
    let domain = create_with_image(&manager, limits(0, 256)).await;
    let script = "perl -e 'print join(\",\", map { $_ * $_ } 1..10), \"\\n\"; printf(\"%.3f\\n\", atan2(1, 1) * 4)' \
        && seq 1 2000 | sort -rn | head -3 && printf 'b\\na\\nb\\n' | sort | uniq -c && echo abc | sha256sum";
    assert_eq!(
        exited(&sh(&manager, &domain, "perl", script).await),
        native_sh(script)
    );
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_and_writes_stay_in_their_own_domain() {
    let Some(manager) = image_manager() else {
        return;
    };
    let first = create_with_image(&manager, limits(0, 128)).await;
    let second = create_with_image(&manager, limits(0, 128)).await;
    let change = "rm /usr/bin/perl && echo changed >> /usr/lib/python3.11/.x && \
        chmod 600 /usr/bin/env && ls /usr/bin/perl 2>&1; cat /usr/lib/python3.11/.x";
    let done = sh(&manager, &first, "change", change).await;
    assert!(
        done.stdout_text()
            .contains("cannot access '/usr/bin/perl': No such file or directory"),
        "{done:?}"
    );
    // A later task of the same domain sees the domain's changes; another domain does not.
    let look = "ls /usr/bin/perl; cat /usr/lib/python3.11/.x; ls -l /usr/bin/env | cut -c1-10";
    let same = sh(&manager, &first, "look", look).await;
    assert_eq!(same.stdout_text(), "changed\n-rw-------\n", "{same:?}");
    let other = exited(
        &sh(
            &manager,
            &second,
            "look",
            "ls /usr/bin/perl && ls -l /usr/bin/env | cut -c1-10",
        )
        .await,
    );
    assert_eq!(other, "/usr/bin/perl\n-rwxr-xr-x\n");
    let image = test_images_dir()
        .join(test_image().expect("image").digest)
        .join("root");
    assert!(image.join("usr/bin/perl").exists());
    assert!(!image.join("usr/share/perl5/.x").exists());
    destroy(&manager, &first).await;
    destroy(&manager, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_cannot_lead_out_of_the_domain() {
    let Some(manager) = image_manager() else {
        return;
    };
    assert!(
        std::path::Path::new("/etc/hostname").exists()
            || std::path::Path::new("/etc/passwd").exists()
    );
    let domain = create_with_image(&manager, limits(0, 128)).await;
    let script = "ln -s ../../../../../../../etc/passwd /tmp/up; ln -s /etc/passwd /tmp/abs; \
        cat /tmp/up /tmp/abs /etc/passwd /proc/1/root/etc/passwd 2>&1; \
        ls /usr/bin/../../../../ | head -3";
    let done = sh(&manager, &domain, "escape", script).await;
    assert_eq!(
        done.stdout_text(),
        "cat: /tmp/up: No such file or directory\ncat: /tmp/abs: No such file or directory\n\
         cat: /etc/passwd: No such file or directory\n\
         cat: /proc/1/root/etc/passwd: No such file or directory\n\
         bin\ndev\netc\n",
        "{done:?}"
    );
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_interpreter_is_enoent_as_on_linux() {
    let Some(manager) = image_manager() else {
        return;
    };
    let Some(musl) = tool("/usr/bin/musl-gcc", "musl-tools") else {
        return;
    };
    // A program linked against musl's dynamic loader, which the Debian image does not have.
    let dir = tempfile::tempdir().expect("dir");
    let source = dir.path().join("d.c");
    std::fs::write(&source, "int main(void) { return 3; }\n").expect("source");
    let out = dir.path().join("d");
    assert!(
        Command::new(musl)
            .arg("-o")
            .arg(&out)
            .arg(&source)
            .status()
            .expect("musl-gcc")
            .success()
    );
    let program = std::fs::read(&out).expect("program");
    let domain = create_with_image(&manager, limits(0, 128)).await;
    let guest = Guest::at_path(
        "/bin/sh",
        &["-c", "./d; echo $?; ./s; echo $?; ./bad; echo $?"],
    )
    .env("PATH", "/usr/bin:/bin")
    .executable("d", &program)
    .executable("s", b"#!/usr/bin/python9\nprint(1)\n")
    .executable("bad", b"\x7fELF\x02\x01\x01\0garbage");
    let done = run(&manager, &domain, "interp", &guest).await;
    assert_eq!(exited(&done), "127\n127\n126\n");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        stderr.contains("./d: not found") && stderr.contains("./s: not found"),
        "{stderr}"
    );
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_not_offered_is_refused_by_name() {
    let Some(manager) = image_manager() else {
        return;
    };
    let refused = manager
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: unique("noimage"),
            env_type: "Linux".into(),
            version: String::new(),
            limits: Some(limits(0, 64)),
            requirements_xml: requirements_with_image("debian-13-nothing"),
            scratch_dir: String::new(),
        }))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unimplemented);
    assert!(
        refused.message().contains("debian-13-nothing") && refused.message().contains(TEST_IMAGE),
        "{}",
        refused.message()
    );
    let caps = manager
        .get_capabilities(Request::new(pb::GetCapabilitiesRequest {}))
        .await
        .expect("capabilities")
        .into_inner();
    assert_eq!(caps.images.len(), 1);
    assert_eq!(caps.images[0].name, TEST_IMAGE);
    assert!(caps.images[0].bytes > 100 << 20);
    assert_eq!(caps.processes_max, 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python3_multiprocessing_pool_maps_over_two_worker_processes() {
    let Some(manager) = image_manager() else {
        return;
    };
    let domain = create_with_image(&manager, limits(0, 512)).await;
    // Pool's queues lock with sem_open semaphores: files in /dev/shm mapped MAP_SHARED by
    // the parent and its forked workers, woken through shared futexes.
    let code = "import multiprocessing, os\n\
        def work(x):\n    return (x * x, os.getpid())\n\
        if __name__ == '__main__':\n\
        \x20   with multiprocessing.Pool(2) as pool:\n\
        \x20       results = pool.map(work, range(20), chunksize=1)\n\
        \x20   print([r[0] for r in results])\n\
        \x20   print(len({r[1] for r in results} - {os.getpid()}) >= 1)\n";
    let guest = Guest::at_path("/usr/bin/python3", &["-c", code]);
    let done = run(&manager, &domain, "pool", &guest).await;
    let native = Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("native python3");
    assert_eq!(exited(&done), String::from_utf8_lossy(&native.stdout));
    destroy(&manager, &domain).await;
}

/// Maps pages of a library of the image privately, without write access, in two processes
/// and many times over: each sees the file's bytes; one making its page writable and
/// writing it changes nothing any other mapping, process or later mapping sees; and sixty
/// maps of the whole library (115 MB) fit a 96 MB domain, because such pages are read once
/// into frames every mapping in the domain shares, as Linux shares its page cache.
const PYTHON_SHARED_PAGES: &str = r#"import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
R, RW, PRIVATE = 1, 3, 2
path = os.path.realpath('/usr/lib/x86_64-linux-gnu/libc.so.6')
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
with open(path, 'rb') as f:
    head = f.read(4)
def m(length=8192):
    p = libc.mmap(None, length, R, PRIVATE, fd, 0)
    assert p not in (None, 2**64 - 1), ctypes.get_errno()
    return p
s = ctypes.string_at
a, b = m(), m()
print('same', s(a, 4) == s(b, 4) == head, flush=True)
libc.mprotect(a, 4096, RW)
ctypes.memset(a, ord('X'), 4)
print('written', s(a, 4), s(b, 4), s(m(), 4), flush=True)
pid = os.fork()
if pid == 0:
    libc.mprotect(b, 4096, RW)
    ctypes.memset(b, ord('Y'), 4)
    print('child', s(b, 4), s(a, 4), s(m(), 4), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print('parent', s(b, 4), s(a, 4), s(m(), 4))
# The whole library mapped many times over, read through: far more than the domain's
# memory unless the pages are shared.
maps = [m(size) for _ in range(60)]
total = sum(ctypes.c_ubyte.from_address(p + off).value for p in maps[::20] for off in range(0, size, 4096))
print('mapped', len(maps), total > 0, all(s(p, 4) == head for p in maps))
for p in maps:
    libc.munmap(p, size)
with open(path, 'rb') as f:
    print('file', f.read(4) == head)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pages_mapped_read_only_are_shared_and_stay_the_files() {
    let Some(manager) = image_manager() else {
        return;
    };
    let domain = create_with_image(&manager, limits(0, 96)).await;
    let guest = Guest::at_path("/usr/bin/python3", &["-c", PYTHON_SHARED_PAGES]);
    let done = run(&manager, &domain, "shared-pages", &guest).await;
    let native = Command::new("python3")
        .args(["-c", PYTHON_SHARED_PAGES])
        .output()
        .expect("native python3");
    assert_eq!(exited(&done), String::from_utf8_lossy(&native.stdout));
    assert!(done.stdout_text().contains("mapped 60 True True"));
    destroy(&manager, &domain).await;
}
