//! `cargo xtask test`: the README's test command, and the checks it runs
//! beyond `cargo test` (other kernel tiers, MPI, aarch64, CUDA and NCCL
//! compile checks).

use crate::bench::{json_strings, system_info};
use crate::*;

pub(crate) fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn test(no_lint: bool) -> Result<()> {
    let python = python_env(&root().join("xtask/requirements-test.txt"))?;
    if !no_lint {
        graph::run(&root())?;
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    run(cargo().args(["build", "-p", "dtml-cli", "--bin", "dtml"]))?;
    let bin = root().join("target/debug/dtml");
    let envs = [
        ("DTML_PYTHON", python.as_os_str()),
        ("DTML_BIN", bin.as_os_str()),
    ];
    if has_nextest() {
        run(cargo()
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .envs(envs))?;
    } else {
        run(cargo()
            .args(["test", "--workspace", "--no-fail-fast", "--all-targets"])
            .envs(envs))?;
    }
    run(cargo().args(["test", "--workspace", "--doc"]).envs(envs))?;
    python_package_tests(&python, &bin)?;
    mpi_tests()?;
    // The kernels' golden and finite-difference tests once more under every
    // other tier this CPU supports, so an AVX-512 machine also checks the
    // AVX2 and portable code (`DTML_CPU` picks the tier per process).
    for tier in other_kernel_tiers(&bin)? {
        eprintln!("kernel tier {tier}:");
        run(cargo()
            .args(["test", "-p", "dtml-model", "--tests", "--no-fail-fast"])
            .envs(envs)
            .env("DTML_CPU", &tier))?;
    }
    Ok(())
}

/// Builds the `dtml` wheel (`crates/dtml-py`, maturin from the venv) into
/// the test venv as a user's `pip install` would, and runs its pytest
/// suite against the live peers there (scipy, medpy, scikit-image,
/// nibabel, pynrrd) and against the `dtml` CLI at `dtml`.
pub(crate) fn python_package_tests(python: &Path, dtml: &Path) -> Result<()> {
    install_wheel(python)?;
    run(Command::new(python)
        .args(["-m", "pytest", "-q"])
        .arg(root().join("crates/dtml-py/tests"))
        // Predictions from Python are compared with this CLI's.
        .env("DTML_BIN", dtml)
        // Imports the installed wheel, not a folder named dtml.
        .current_dir(std::env::temp_dir()))
}

/// Builds and installs the `dtml` wheel into the venv of `python`, as a
/// user's `pip install` from a checkout does (maturin from the venv).
pub(crate) fn install_wheel(python: &Path) -> Result<()> {
    let bin = python.parent().context("the venv's bin folder")?;
    let path = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    run(crate::pip_install(python)
        .args(["--no-build-isolation", "--force-reinstall", "--no-deps"])
        .arg(root().join("crates/dtml-py"))
        .env("PATH", &path))
}

/// The kernel tiers this CPU supports besides the one `dtml` picks itself.
pub(crate) fn other_kernel_tiers(dtml: &Path) -> Result<Vec<String>> {
    let v = system_info(dtml)?;
    let active = v["kernel_tier"].as_str().unwrap_or_default();
    Ok(json_strings(&v["supported_tiers"])
        .into_iter()
        .filter(|t| t != active)
        .collect())
}

/// Compile-checks the model, inference and training crates and the CLI
/// with `cudnn` (which implies `cuda`: `--device cuda`, the GPU step bench),
/// then with `nccl` (clippy, warnings as errors),
/// against the build-only CUDA toolchain from `../shared/cuda-toolchain.sh`,
/// cached in `~/.cache/cuda-toolchain` so a warm machine skips the download.
pub(crate) fn cuda_check() -> Result<()> {
    let script = root().join("../shared/cuda-toolchain.sh");
    if !script.is_file() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!(
                "{} is missing: CI must compile-check the CUDA path",
                script.display()
            );
        }
        eprintln!(
            "skipped the CUDA compile check: {} not found",
            script.display()
        );
        return Ok(());
    }
    let check = "exports=$(bash \"$1\") && eval \"$exports\" && \
        cargo check -p dtml-model -p dtml-infer -p dtml-train -p dtml-cli \
        --features dtml-infer/cuda,dtml-train/cudnn,dtml-cli/cudnn --all-targets --target-dir target/cuda-check";
    run(Command::new("bash")
        .current_dir(root())
        .args(["-c", check, "cuda-check"])
        .arg(&script))?;
    // NCCL data parallelism: MPI carries NCCL's id, so it builds against
    // the MPI the test step installed.
    let has_mpi = Command::new("mpicc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_mpi {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("mpicc is missing: CI must compile-check the NCCL path");
        }
        eprintln!("skipped the NCCL compile check: no mpicc here");
        return Ok(());
    }
    let nccl = "exports=$(bash \"$1\") && eval \"$exports\" && \
        cargo clippy -p dtml-train -p dtml-cli \
        --features dtml-model/cudnn,dtml-train/nccl,dtml-cli/nccl --all-targets --target-dir target/cuda-check -- -D warnings";
    run(Command::new("bash")
        .current_dir(root())
        .args(["-c", nccl, "nccl-check"])
        .arg(&script))
}

/// Debian's packages for the MPI tests: Open MPI (`mpirun`, `mpicc`) and
/// libclang, which rsmpi's bindings are generated with.
pub(crate) const MPI_PACKAGES: [&str; 3] = ["openmpi-bin", "libopenmpi-dev", "libclang-dev"];

/// Data-parallel training over MPI: clippy on the `mpi` feature and the
/// test that runs `mpirun -np 2` (`crates/dtml-train/tests/mpi_ranks.rs`).
/// Installs Open MPI with apt-get where it is missing (CI runs as root);
/// elsewhere, without it, the step says so and is skipped, but under
/// `CI=true` a missing MPI is an error.
pub(crate) fn mpi_tests() -> Result<()> {
    let has = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !(has("mpirun") && has("mpicc")) {
        if ci {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            run(Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(MPI_PACKAGES)
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        } else {
            eprintln!(
                "skipped the MPI tests: no mpirun/mpicc here (apt-get install {})",
                MPI_PACKAGES.join(" ")
            );
            return Ok(());
        }
    }
    run(cargo().args([
        "clippy",
        "-p",
        "dtml-train",
        "-p",
        "dtml-cli",
        "--features",
        "dtml-train/mpi,dtml-cli/mpi",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args([
        "test",
        "-p",
        "dtml-train",
        "--features",
        "mpi",
        "--test",
        "mpi_ranks",
    ]))
}

/// The target of the NEON tier's compile check.
pub(crate) const ARM_TARGET: &str = "aarch64-unknown-linux-gnu";

/// Compile-checks the library crates and the CLI for aarch64 (the NEON
/// tier lives behind `cfg(target_arch = "aarch64")`), warnings as errors.
/// The standard library for that target comes from rustup; where it cannot
/// be installed (no network) the check says so and is skipped, since the
/// x86 tiers run the same generic kernel source.
pub(crate) fn arm_check() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == ARM_TARGET)
        });
    if !installed {
        let added = Command::new("rustup")
            .args(["target", "add", ARM_TARGET])
            .status()
            .is_ok_and(|s| s.success());
        if !added {
            eprintln!(
                "skipped the aarch64 compile check: `rustup target add {ARM_TARGET}` failed here"
            );
            return Ok(());
        }
    }
    // Library targets only: dev-dependencies (criterion's alloca) build C
    // code, which needs a cross C compiler.
    run(cargo()
        .args([
            "check",
            "--target",
            ARM_TARGET,
            "--target-dir",
            "target/arm-check",
        ])
        .args([
            "-p",
            "dtml-model",
            "-p",
            "dtml-edt",
            "-p",
            "dtml-train",
            "-p",
            "dtml-cli",
        ])
        .env("RUSTFLAGS", "-D warnings"))
}
