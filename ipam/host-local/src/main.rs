fn main() {
    cni_core::skel::run(&host_local::HostLocal::default(), "host-local")
}
