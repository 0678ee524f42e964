// A Go gRPC server that knows nothing of grpcmesh: the standard health service, and a line
// protocol on stdin to change its status ("SERVING" / "NOT_SERVING"). It prints "PORT <n>".
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	status := health.NewServer()
	status.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(server, status)
	fmt.Printf("PORT %d\n", listener.Addr().(*net.TCPAddr).Port)
	go func() {
		lines := bufio.NewScanner(os.Stdin)
		for lines.Scan() {
			switch strings.TrimSpace(lines.Text()) {
			case "SERVING":
				status.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			case "NOT_SERVING":
				status.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			}
			fmt.Println("OK")
		}
		server.Stop()
	}()
	_ = server.Serve(listener)
}
