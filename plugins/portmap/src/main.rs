fn main() {
    cni_core::skel::run(&cni_portmap::plugin::Portmap, "portmap")
}
