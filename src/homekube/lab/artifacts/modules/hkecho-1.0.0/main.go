// hkecho is the lab's test workload: an HTTP server that answers with who it is, and a
// client mode that fetches a URL (by DNS name) and prints the answer. Written for homekube's
// real-cluster tests; one static binary, no shell needed in the image.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func serve(addr string) error {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s pod=%s node=%s remote=%s\n", host, os.Getenv("POD_IP"), os.Getenv("NODE_NAME"), r.RemoteAddr)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

// fetch GETs url once; with family "4" or "6" it dials only that address family.
func fetch(url, family string, timeout time.Duration) error {
	d := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if family == "4" || family == "6" {
			network = "tcp" + family
		}
		return d.DialContext(ctx, network, addr)
	}}
	c := &http.Client{Transport: tr, Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	fmt.Print(string(body))
	return nil
}

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"serve", ":8080"}
	}
	var err error
	switch args[0] {
	case "serve":
		addr := ":8080"
		if len(args) > 1 {
			addr = args[1]
		}
		err = serve(addr)
	case "get":
		if len(args) < 2 {
			err = fmt.Errorf("usage: hkecho get URL [4|6]")
			break
		}
		family := ""
		if len(args) > 2 {
			family = strings.TrimSpace(args[2])
		}
		err = fetch(args[1], family, 10*time.Second)
	case "sleep":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		<-ctx.Done()
	default:
		err = fmt.Errorf("unknown command %q (serve, get, sleep)", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hkecho:", err)
		os.Exit(1)
	}
}
