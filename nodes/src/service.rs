//! `outpost agent service install|uninstall|start|stop`: the agent as a Windows service
//! (`OutpostAgent`, automatic start, LocalSystem), and the entry point the service manager
//! starts (`agent service run`), which runs `agent run` and stops it cleanly when asked.

/// Runs `outpost agent service …`.
#[cfg(not(windows))]
pub fn command(_action: &crate::cli::ServiceAction) -> anyhow::Result<()> {
    anyhow::bail!(
        "`outpost agent service` manages the Windows service; on Linux the agent daemon runs under systemd \
         (deploy/systemd/outpost-agent.service)"
    )
}

#[cfg(windows)]
pub use self::windows::command;

#[cfg(windows)]
mod windows {
    use std::ffi::OsString;
    use std::path::Path;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use windows_service::service::{
        ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode, ServiceInfo,
        ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_service::{define_windows_service, service_dispatcher};

    use crate::cli::{AgentArgs, ServiceAction};
    use crate::config::{self, Place};

    /// The service's name.
    pub const NAME: &str = "OutpostAgent";
    const DISPLAY: &str = "Outpost agent";
    const DESCRIPTION: &str =
        "Keeps this machine's software as its Outpost packages say, and reports its inventory to central.";
    /// How long start and stop are waited for.
    const WAIT: Duration = Duration::from_secs(60);
    /// Windows' `ERROR_SERVICE_EXISTS` and `ERROR_SERVICE_DOES_NOT_EXIST`.
    const EXISTS: i32 = 1073;
    const MISSING: i32 = 1060;

    /// Runs `outpost agent service …`.
    pub fn command(action: &ServiceAction) -> Result<()> {
        match action {
            ServiceAction::Install(_) => install(),
            ServiceAction::Uninstall => uninstall(),
            ServiceAction::Start => start(),
            ServiceAction::Stop => stop(),
            ServiceAction::Run(args) => run(args),
        }
    }

    fn winapi_code(e: &windows_service::Error) -> Option<i32> {
        match e {
            windows_service::Error::Winapi(io) => io.raw_os_error(),
            _ => None,
        }
    }

    fn manager(access: ServiceManagerAccess) -> Result<ServiceManager> {
        ServiceManager::local_computer(None::<&str>, access)
            .context("cannot open the service manager (run this as an administrator)")
    }

    fn open(access: ServiceAccess) -> Result<windows_service::service::Service> {
        manager(ServiceManagerAccess::CONNECT)?.open_service(NAME, access).map_err(|e| {
            if winapi_code(&e) == Some(MISSING) {
                anyhow::anyhow!("the {NAME} service is not installed: `outpost agent service install` first")
            } else {
                anyhow::Error::new(e).context(format!("cannot open the {NAME} service (run this as an administrator)"))
            }
        })
    }

    /// The flags `install` was given, for `run`: `install` becomes `run`, paths become absolute
    /// (the service starts in the system folder), and the configuration file in use is named.
    fn launch_arguments() -> Result<Vec<OsString>> {
        const PATHS: [&str; 6] = ["--config", "--state", "--ca", "--cert", "--key", "--password-file"];
        let absolute = |v: &OsString| -> Result<OsString> {
            Ok(std::path::absolute(Path::new(v)).with_context(|| format!("{}", Path::new(v).display()))?.into())
        };
        let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
        let mut out = Vec::new();
        let (mut seen_install, mut path_next, mut has_config) = (false, false, false);
        for arg in argv {
            let text = arg.to_string_lossy().into_owned();
            if path_next {
                out.push(absolute(&arg)?);
                path_next = false;
            } else if !seen_install && text == "install" {
                out.push("run".into());
                seen_install = true;
            } else if let Some((flag, value)) = text.split_once('=').filter(|(f, _)| PATHS.contains(f)) {
                has_config |= flag == "--config";
                let mut joined = OsString::from(format!("{flag}="));
                joined.push(absolute(&OsString::from(value))?);
                out.push(joined);
            } else {
                path_next = PATHS.contains(&text.as_str());
                has_config |= text == "--config";
                out.push(arg);
            }
        }
        if !has_config && let Some(file) = config::agent_config_path(None) {
            out.push("--config".into());
            out.push(absolute(&file.into_os_string())?);
        }
        Ok(out)
    }

    fn install() -> Result<()> {
        let exe = std::env::current_exe().context("finding outpost.exe")?;
        let arguments = launch_arguments()?;
        let info = ServiceInfo {
            name: NAME.into(),
            display_name: DISPLAY.into(),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: exe.clone(),
            launch_arguments: arguments.clone(),
            dependencies: vec![],
            account_name: None, // LocalSystem
            account_password: None,
        };
        let manager = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
        let service = manager.create_service(&info, ServiceAccess::CHANGE_CONFIG).map_err(|e| {
            if winapi_code(&e) == Some(EXISTS) {
                anyhow::anyhow!(
                    "the {NAME} service is already installed: `outpost agent service uninstall` first to change it"
                )
            } else {
                anyhow::Error::new(e).context(format!("cannot install the {NAME} service"))
            }
        })?;
        let _ = service.set_description(DESCRIPTION);
        // The folder of the configuration, certificates, key and state: SYSTEM and
        // Administrators only.
        let dir = config::system_dir(Place::Config);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        outpost_actors::windows::acl::restrict_folder(&dir)
            .with_context(|| format!("restricting {} to SYSTEM and Administrators", dir.display()))?;
        let shown: Vec<String> = arguments.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        println!("installed the {NAME} service: {} {}", exe.display(), shown.join(" "));
        println!("{} is open to SYSTEM and Administrators only", dir.display());
        println!("start it with `outpost agent service start`; it starts at boot");
        Ok(())
    }

    fn wait_for(service: &windows_service::service::Service, want: ServiceState) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = service.query_status().context("asking the service's state")?;
            if status.current_state == want {
                return Ok(());
            }
            if status.current_state == ServiceState::Stopped && want == ServiceState::Running {
                bail!(
                    "the {NAME} service stopped as it started (exit code {:?}); its log is {}",
                    status.exit_code,
                    log_path().display()
                );
            }
            if Instant::now() > deadline {
                bail!("the {NAME} service is still {:?} after {} s", status.current_state, WAIT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start() -> Result<()> {
        let service = open(ServiceAccess::START | ServiceAccess::QUERY_STATUS)?;
        if service.query_status()?.current_state == ServiceState::Running {
            println!("the {NAME} service already runs");
            return Ok(());
        }
        service.start::<&str>(&[]).with_context(|| format!("starting the {NAME} service"))?;
        wait_for(&service, ServiceState::Running)?;
        println!("the {NAME} service runs");
        Ok(())
    }

    fn stop_and_wait(service: &windows_service::service::Service) -> Result<bool> {
        if service.query_status()?.current_state == ServiceState::Stopped {
            return Ok(false);
        }
        service.stop().with_context(|| format!("stopping the {NAME} service"))?;
        wait_for(service, ServiceState::Stopped)?;
        Ok(true)
    }

    fn stop() -> Result<()> {
        let service = open(ServiceAccess::STOP | ServiceAccess::QUERY_STATUS)?;
        if stop_and_wait(&service)? {
            println!("the {NAME} service has stopped");
        } else {
            println!("the {NAME} service was not running");
        }
        Ok(())
    }

    fn uninstall() -> Result<()> {
        let service = open(ServiceAccess::STOP | ServiceAccess::QUERY_STATUS | ServiceAccess::DELETE)?;
        if stop_and_wait(&service)? {
            println!("the {NAME} service has stopped");
        }
        service.delete().with_context(|| format!("removing the {NAME} service"))?;
        println!("removed the {NAME} service (its configuration and state are kept)");
        Ok(())
    }

    /// Where the service writes what the daemon says.
    fn log_path() -> std::path::PathBuf {
        config::system_dir(Place::State).join("agent-service.log")
    }

    static ARGS: OnceLock<AgentArgs> = OnceLock::new();

    define_windows_service!(ffi_service_main, service_main);

    fn run(args: &AgentArgs) -> Result<()> {
        let _ = ARGS.set(args.clone());
        // A service has no console: what it says goes to its log.
        let log = log_path();
        if let Some(dir) = log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(file) = std::fs::OpenOptions::new().create(true).append(true).open(&log) {
            let _ = outpost_actors::windows::system::redirect_output(file);
        }
        eprintln!(
            "{}: started by the service manager",
            outpost_protocol::time_fmt::format_unix(outpost_actors::clock::unix_now())
        );
        service_dispatcher::start(NAME, ffi_service_main).context(
            "this is what the service manager starts: use `outpost agent service start`, or `outpost agent run` in a \
             console",
        )?;
        Ok(())
    }

    fn status(state: ServiceState, exit: u32) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code: if exit == 0 { ServiceExitCode::Win32(0) } else { ServiceExitCode::ServiceSpecific(exit) },
            checkpoint: 0,
            wait_hint: Duration::from_secs(if state == ServiceState::Running { 0 } else { 30 }),
            process_id: None,
        }
    }

    fn service_main(_arguments: Vec<OsString>) {
        let handler = |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                crate::daemon::request_stop();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let Ok(handle) = service_control_handler::register(NAME, handler) else { return };
        let _ = handle.set_service_status(status(ServiceState::Running, 0));
        let Some(args) = ARGS.get() else { return };
        let result = crate::agent_cmd::run(args);
        let now = outpost_protocol::time_fmt::format_unix(outpost_actors::clock::unix_now());
        match &result {
            Ok(()) => eprintln!("{now}: stopped"),
            Err(e) => eprintln!("{now}: error: {e:#}"),
        }
        let _ = handle.set_service_status(status(ServiceState::StopPending, 0));
        let _ = handle.set_service_status(status(ServiceState::Stopped, u32::from(result.is_err())));
    }
}
