fn main() {
    cni_core::skel::run(&cni_bridge::plugin::BRIDGE, "bridge")
}
