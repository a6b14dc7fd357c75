// Command pause is the pod sandbox process of the homekube lab (written for the lab, not
// taken from Kubernetes): it keeps the pod's namespaces alive, reaps the zombies it inherits
// when it is PID 1 of a shared PID namespace, and exits 0 on SIGINT or SIGTERM so a runtime
// can stop the sandbox without waiting for a SIGKILL.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at build time (-X main.version=...).
var version = "unknown"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Printf("homekube-lab pause %s\n", version)
		return
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child: several SIGCHLDs may arrive as one.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
