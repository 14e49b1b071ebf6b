// etcd, as the etcd binary runs it: server/v3's etcdmain at the version kube-apiserver
// v1.36.3 is built and tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
