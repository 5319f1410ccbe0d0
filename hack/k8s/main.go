// Command k8s is a multi-call binary holding the Kubernetes control plane the
// local platform runs (see docs/development.md): kube-apiserver,
// kube-controller-manager, kube-scheduler, kubectl and etcd, all from the
// published Go modules (k8s.io/kubernetes v1.35.4, go.etcd.io/etcd/server/v3).
//
// It dispatches on the basename of os.Args[0] (symlinks named after each
// component), or on os.Args[1] when invoked as "k8s <component> ...".
package main

import (
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata" // CronJob time zones, as upstream's mains

	"go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var components = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd"}

func run(name string) (int, bool) {
	switch name {
	case "kube-apiserver":
		return cli.Run(apiserver.NewAPIServerCommand()), true
	case "kube-controller-manager":
		return cli.Run(controllermanager.NewControllerManagerCommand()), true
	case "kube-scheduler":
		return cli.Run(scheduler.NewSchedulerCommand()), true
	case "kubectl":
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) // nolint:errcheck
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0, true
	case "etcd":
		etcdmain.Main(os.Args)
		return 0, true
	}
	return 0, false
}

func main() {
	if code, ok := run(filepath.Base(os.Args[0])); ok {
		os.Exit(code)
	}
	if len(os.Args) > 1 {
		name := os.Args[1]
		os.Args = append([]string{name}, os.Args[2:]...)
		if code, ok := run(name); ok {
			os.Exit(code)
		}
	}
	fmt.Fprintf(os.Stderr, "usage: k8s {%v} [args...] (or call through a symlink of that name)\n", components)
	os.Exit(2)
}
