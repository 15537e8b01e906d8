fn main() {
    cni_core::skel::run(&cni_tuning::plugin::TUNING, "tuning")
}
