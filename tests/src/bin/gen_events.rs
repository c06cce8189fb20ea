//! Rewrites the generated sample events under `events/`.

fn main() {
    for (path, content) in stratus_tests::events::generate() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        println!("wrote {}", path.display());
    }
}
