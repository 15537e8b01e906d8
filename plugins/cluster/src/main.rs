fn main() {
    cni_core::skel::run(&cni_cluster::plugin::Cluster, "cluster")
}
