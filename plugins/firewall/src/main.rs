fn main() {
    cni_core::skel::run(&cni_firewall::plugin::Firewall, "firewall")
}
