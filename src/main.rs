fn main() -> std::process::ExitCode {
    compute_optimizer_exporter::cli::main()
}
