//! `stratus-fn-diag`: the diagnostics function under `lambda_runtime`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    stratus_messaging::function::run("diag", stratus_fn_diag::handlers()).await
}
